"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    z = ReLU(TopK_k(pre))                                   (eq. 2)
    L = ‖x̃ − x̂‖² [+ L(4k)/8 with Multi-TopK] [+ α L_aux]

AuxK (section A.2): with e = sg(x̃ − x̂) and z_aux = ReLU(TopK_{k_aux}(pre on dead latents)),
    ê = z_aux W_dec            (no b_dec, nor a transcoder's skip term: they are already in x̂)
    L_aux = ‖e − ê‖² / ‖e − ē‖²  (sums over the batch; ē the batch mean of e)
It is zero when no latent is dead. Dead statistics count the k-set only, never the 4k set.
For a transcoder every x̂ above is its output ŷ and every x̃ its target ỹ.
The top-k is exact when latents are split across devices (`collectives.top_k_over_latents`).

Training runs one of two paths with the same numbers (tested within 1e-5):
- dense: z is the B×n matrix, x̂ = z W_dec (the formula as written; `encode` always returns it);
- sparse (`sae.topk_path`, default "auto" = sparse where it is faster): after the encoder's
  forward matmul and the top-k, forward and backward touch only the k chosen latents per token
  (`jaxsae.sae.sparse_topk`). Multi-TopK takes its k-set as the first k of one top-4k, and AuxK
  its candidates from the same pre-activations; the only n-wide activations are `pre` and, with
  AuxK, its copy masked to the dead latents. With `sae.compute_dtype = "bfloat16"` the encoder
  matmul runs in bfloat16 (float32 accumulation); the gathers and scatter-adds stay float32 (they
  are k/n of the work), and the top-k always ranks float32.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsae.sae import collectives, sparse_topk
from jaxsae.sae.base import FIRE_THRESHOLD, Encoding, Hyper, LossOutput, SparseAutoencoder

# "auto" picks the sparse path when the dictionary is at least this many times the top-k width:
# below it the B×n matmuls it saves are too small to pay for its gathers and scatters. Measured
# on CPU (python -m experiments.bench.sae --architectures=topk:topk_path=sparse,...dense, whole
# steps, batch 1024): d=256, k=32: n=512 (16×) dense 1.6× faster, n=1024 (32×) sparse 1.8×,
# n=2048 sparse 1.6×; d=768, k=128, n=4096 (32×) dense 1.13× faster.
SPARSE_MIN_RATIO = 32


def top_k_latents(pre_BxN: jax.Array, k_max: int, k: jax.Array, axes) -> jax.Array:
  """ReLU of the k largest pre-activations of each row, the rest zero (k ≤ k_max traced)."""
  values, indices = collectives.top_k_over_latents(pre_BxN, k_max, axes)
  values = jnp.where(jnp.arange(k_max) < k, jax.nn.relu(values), 0.0).astype(pre_BxN.dtype)
  return collectives.scatter_latents(values, indices, pre_BxN.shape[-1])


class SparseCode(NamedTuple):
  """k latents per token: values z (B×k) at local indices idx (B×k; n_local where another latent
  shard holds the latent, whose value here is 0)."""

  z: jax.Array
  idx: jax.Array


class _Encoder(NamedTuple):
  """What the sparse path's selections share: centered inputs, encoder weights, `pre`, and the
  zero row carrying b_dec's encoder-side gradient (`SparseAutoencoder.centered_matmul`; None
  for a transcoder, whose input is not centered)."""

  centered: jax.Array
  W_enc: jax.Array
  b_enc: jax.Array
  pre: jax.Array
  b_dec_shift: jax.Array | None

  def select(self, idx_BxK: jax.Array) -> jax.Array:
    """ReLU(pre) at idx, with the sparse gradient."""
    values = sparse_topk.select_pre(self.centered, self.W_enc, self.b_enc, idx_BxK, self.pre)
    if self.b_dec_shift is None:
      return jax.nn.relu(values)
    return jax.nn.relu(values + sparse_topk.gather_shift(self.b_dec_shift, idx_BxK))


class TopKSAE(SparseAutoencoder):
  """TopK activation with optional AuxK, Multi-TopK and Matryoshka terms."""

  # Subclasses that select latents differently (BatchTopK) train on the dense path.
  has_sparse_path = True
  # A positive scale of W_enc scales z and leaves the chosen latents unchanged (b_enc = 0 at
  # init), so encoder_init_scale = -1 fits it (base.fitted_encoder_scale).
  fits_encoder_scale = True

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    pre = self.pre_activations(x_BxD)
    k = self.config.k if hyper is None else hyper.k
    return Encoding(top_k_latents(pre, self.config.k, k, self.axes), pre)

  @property
  def has_aux_k(self) -> bool:
    return self.config.aux_k > 0

  def extra_terms(self, x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N):
    terms, stats = {}, {}
    if self.config.multi_topk:
      z4 = top_k_latents(enc.pre, 4 * self.config.k, 4 * hyper.k, self.axes)
      terms["multi_topk"] = self.reconstruction_term(x_BxD, y_BxO, z4) / 8
    if self.has_aux_k:
      aux_k = functools.partial(self.aux_k_loss, y_BxO, y_hat_BxO, enc.pre)
      self._add_aux_k(terms, stats, hyper, aux_k, dead_N)
    return terms, stats

  def _add_aux_k(self, terms, stats, hyper, aux_k_loss, dead_N):
    """AuxK's term and statistics; with dead_N None (nothing dead) L_aux = 0, not computed."""
    if dead_N is None:
      aux, n_dead = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
    else:
      aux, n_dead = aux_k_loss(dead_N)
    terms["aux_k"] = hyper.aux_alpha * aux
    stats["aux_k_loss"], stats["dead"] = jax.lax.stop_gradient(aux), n_dead

  def aux_k_loss(self, x_BxD, x_hat_BxD, pre_BxN, dead_N) -> tuple[jax.Array, jax.Array]:
    """(L_aux, number of dead latents): the dead latents' top-k_aux reconstruct the residual."""
    dead_pre = jnp.where(dead_N, pre_BxN, -jnp.inf)
    z_aux = top_k_latents(dead_pre, self._k_aux, self._k_aux, self.axes)  # Live: ReLU(-inf) = 0.
    return self._aux_ratio(x_BxD, x_hat_BxD, self.axes.sum_latents(self.write(z_aux)), dead_N)

  @property
  def _k_aux(self) -> int:
    return min(self.config.aux_k, self.config.n_latents)

  def _aux_ratio(self, x_BxD, x_hat_BxD, e_hat_BxD, dead_N) -> tuple[jax.Array, jax.Array]:
    """L_aux = ‖e − ê‖² / ‖e − ē‖² over the global batch, 0 with no dead latent."""
    axes = self.axes
    e = jax.lax.stop_gradient(x_BxD - x_hat_BxD)
    n_dead = axes.sum_latents(jnp.sum(dead_N, dtype=jnp.int32))
    n_tokens = e.shape[0] * axes.batch_shards()
    e_mean = axes.sum_batch(e.sum(0)) / n_tokens
    num = axes.sum_batch(jnp.sum((e - e_hat_BxD) ** 2))
    den = axes.sum_batch(jnp.sum((e - e_mean) ** 2))
    aux = jnp.where(n_dead > 0, num / jnp.maximum(den, 1e-30), 0.0)
    return aux, n_dead

  # ---- the sparse path ------------------------------------------------------------------------
  @property
  def sparse_path(self) -> bool:
    """Whether `loss` trains on the sparse path (`sae.topk_path`)."""
    cfg = self.config
    if not self.has_sparse_path or cfg.topk_path == "dense" or cfg.layers > 1:  # CLTs: dense.
      return False
    k_max = 4 * cfg.k if cfg.multi_topk else cfg.k
    return cfg.topk_path == "sparse" or cfg.n_latents >= SPARSE_MIN_RATIO * k_max

  def loss(self, x_BxD, hyper=None, dead_N=None, train=True, target=None) -> LossOutput:
    if not self.sparse_path:
      return super().loss(x_BxD, hyper, dead_N, train, target)
    cfg, axes = self.config, self.axes
    hyper = Hyper.of(cfg) if hyper is None else hyper
    y = x_BxD if target is None else target
    encoder = self._sparse_encoder(x_BxD)
    k_max = 4 * cfg.k if cfg.multi_topk else cfg.k
    _, idx = collectives.top_k_over_latents(encoder.pre, k_max, axes)
    z_all = encoder.select(idx)
    rank = jnp.arange(k_max)
    code = SparseCode(jnp.where(rank < hyper.k, z_all, 0.0)[:, : cfg.k], idx[:, : cfg.k])
    y_hat = self.decode_sparse(code, x_BxD)
    terms = {"reconstruction": self.sparse_reconstruction_term(x_BxD, y, code, y_hat)}
    if cfg.multi_topk:
      code4 = SparseCode(jnp.where(rank < 4 * hyper.k, z_all, 0.0), idx)
      terms["multi_topk"] = self.sparse_reconstruction_term(x_BxD, y, code4) / 8
    stats = self.sparse_statistics(y, y_hat, code)
    if self.has_aux_k:
      aux_k = functools.partial(self._sparse_aux_k_loss, y, y_hat, encoder)
      self._add_aux_k(terms, stats, hyper, aux_k, dead_N)
    return LossOutput(sum(terms.values()), terms, stats)

  def _sparse_encoder(self, x_BxD) -> _Encoder:
    vary = self.axes.vary
    if self.config.transcode:  # No b_dec on the input side (base.centered_matmul).
      centered, shift = vary(x_BxD), None
    else:
      centered = vary(x_BxD - jax.lax.stop_gradient(self.b_dec))
      shift = self.b_dec_shift(self.W_enc)[0]
    W_enc, b_enc = vary(self.W_enc), vary(self.b_enc)
    pre = jax.lax.stop_gradient(self.matmul(centered, W_enc) + b_enc)
    return _Encoder(centered, W_enc, b_enc, pre, shift)

  def decode_sparse(self, code: SparseCode, x_BxD=None) -> jax.Array:
    """ŷ = Σ_j z_j W_dec[i_j] + b_dec (+ x̃ W_skip), partial sums added over latent shards."""
    partial = sparse_topk.combine_rows(code.z, code.idx, self.axes.vary(self.W_dec))
    return self.axes.sum_latents(partial) + self.output_bias(x_BxD)

  def sparse_reconstruction_term(self, x_BxD, y_BxO, code: SparseCode, y_hat=None) -> jax.Array:
    """`reconstruction_term` on a sparse code (Matryoshka: latents of global index < m)."""
    prefixes = self.config.prefixes
    if len(prefixes) == 1:
      y_hat = self.decode_sparse(code, x_BxD) if y_hat is None else y_hat
      return self.reconstruction_error(y_BxO, y_hat)
    index = self.axes.latent_offset(self.W_dec.shape[0]) + code.idx
    return sum(
      self.reconstruction_error(
        y_BxO, self.decode_sparse(SparseCode(jnp.where(index < m, code.z, 0.0), code.idx), x_BxD)
      )
      for m in prefixes
    )

  def sparse_statistics(self, y_BxO, y_hat_BxO, code: SparseCode) -> dict[str, jax.Array]:
    """`statistics` from a sparse code: l0, batch FVU, per-latent firing counts."""
    fires = (jax.lax.stop_gradient(code.z) > FIRE_THRESHOLD).astype(jnp.int32)
    fired = sparse_topk.scatter_sum(self.W_dec.shape[0], code.idx, fires, jnp.int32)
    return self.statistics(y_BxO, y_hat_BxO, code.z, fired)

  def _sparse_aux_k_loss(self, x_BxD, x_hat_BxD, encoder: _Encoder, dead_N):
    """`aux_k_loss` from the same pre-activations, decoding only the k_aux chosen dead latents."""
    n_local = self.W_dec.shape[0]
    dead_pre = jnp.where(dead_N, encoder.pre, -jnp.inf)
    _, idx = collectives.top_k_over_latents(dead_pre, self._k_aux, self.axes)
    # With fewer dead latents than k_aux the top-k also returns live ones (at -inf): drop them.
    held_dead = (idx < n_local) & dead_N[jnp.minimum(idx, n_local - 1)]
    idx = jnp.where(held_dead, idx, n_local)
    partial = sparse_topk.combine_rows(encoder.select(idx), idx, self.axes.vary(self.W_dec))
    return self._aux_ratio(x_BxD, x_hat_BxD, self.axes.sum_latents(partial), dead_N)
