"""The interface every sparse dictionary speaks, and the parts they share.

    SAE:         pre = (x̃ − b_dec) W_enc + b_enc ;   z = f(pre) ;   x̂ = z W_dec + b_dec
    transcoder:  pre = x̃ W_enc + b_enc            ;   z = f(pre) ;   ŷ = z W_dec + b_dec
    either, with `skip`:                                             ŷ += x̃ W_skip

A dictionary is trained on (input x̃, target ỹ) pairs: `loss(x, target=y)`. An SAE is the case
y = x (`target=None`, the same computation as before targets existed). A transcoder
(`config.transcode`) maps one site to another, e.g. an MLP's input to its output (Dunefsky et
al. 2024); b_dec is then the output's bias only, so the encoder does not subtract it. The
reconstruction term, FVU, AuxK's residual and the dead statistics are all measured against ỹ.

An architecture is one subclass of `SparseAutoencoder` in its own file plus a registry entry.
It implements `encode` (and, if it has one, a sparsity penalty or auxiliary losses); the base
class gives it the parameters, `decode`, the reconstruction term (Matryoshka included), the
statistics the trainer tracks, and `loss`, which returns the total and every named term.

Parameters use the names of the SAELens format (W_enc d×n, b_enc n, W_dec n×d_out, b_dec d_out,
W_skip d×d_out), with logical axes ("embed", "latents") so the trainer can split the latents over the `model` mesh
axis. Inside `jax.shard_map` the module sees its shard of the latents and `axes` names the mesh
axes; every cross-shard reduction goes through `jaxsae.sae.collectives`.

Reconstruction error is ‖ỹ − ŷ‖²/d_out averaged over tokens: with targets scaled to
E‖ỹ‖² = d_out it reads as a fraction of the input's energy, the scale on which the TopK paper's AuxK
coefficient α = 1/32 (a ratio of normalized errors) was set.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxsae.sae import cross_layer
from jaxsae.sae.collectives import Axes
from jaxsae.sae.config import SAEConfig

# A latent "fires" on a token when its activation exceeds this (TopK paper, dead latents).
FIRE_THRESHOLD = 1e-3


@flax.struct.dataclass
class Hyper:
  """Hyperparameters that are traced, so members of a vmapped sweep may differ in them.

  k:  active latents (≤ config.k, the static maximum the top-k is taken at).
  sparsity_coefficient: λ at this step (after warmup).
  aux_alpha: AuxK coefficient α.
  """

  k: jax.Array
  sparsity_coefficient: jax.Array
  aux_alpha: jax.Array

  @classmethod
  def of(cls, config: SAEConfig, sparsity_scale: float | jax.Array = 1.0) -> Hyper:
    return cls(
      k=jnp.asarray(config.k, jnp.int32),
      sparsity_coefficient=jnp.asarray(config.sparsity_coefficient * sparsity_scale, jnp.float32),
      aux_alpha=jnp.asarray(config.aux_alpha, jnp.float32),
    )


class Encoding(NamedTuple):
  """latents z (B×n), the pre-activations they were chosen from, and Gated's gate π_g."""

  latents: jax.Array
  pre: jax.Array
  gate: jax.Array | None = None


class LossOutput(NamedTuple):
  """total = Σ terms. `stats` are diagnostics: l0, fvu, fired (per-latent firing counts)…"""

  total: jax.Array
  terms: dict[str, jax.Array]
  stats: dict[str, jax.Array]


def unit_rows(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Random rows of norm 1 (TopK paper init of W_dec)."""
  w = jax.random.normal(key, shape, jnp.float32)
  return (w / jnp.linalg.norm(w, axis=-1, keepdims=True)).astype(dtype)


def _partitioned(init, names: tuple[str, ...]):
  return nn.with_logical_partitioning(init, names)


def _constant(value: float):
  return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


class SparseAutoencoder(nn.Module):
  """Base class: parameters, decode, reconstruction and the loss around `encode`.

  Subclasses define `encode(x, hyper=None, train=False) -> Encoding`.
  """

  config: SAEConfig
  axes: Axes = Axes()

  # Whether "decoder_norm=auto" means a unit-norm decoder for this architecture.
  auto_unit_norm_decoder = True
  # Whether the architecture has an L1 penalty the decoder norm can weight.
  has_l1_penalty = False
  # Whether `loss` has a term that needs the dead-latent mask (TopK's AuxK).
  has_aux_k = False
  # Adam β1 when optim.b1 = -1 (dictionary_learning trains JumpReLU and Gated with β1 = 0; jaxsae
  # keeps 0 for JumpReLU only, see gated.py).
  default_b1 = 0.9
  # Per-SAE global gradient-norm clip when optim.clip_norm = -1 (JumpReLU's target penalty: 1/d).
  default_clip_norm = 1.0
  # Whether encoder_init_scale = -1 fits W_enc's scale at init (`fitted_encoder_scale`): only
  # where z scales with W_enc (TopK, BatchTopK, Gated); others keep s = 1.
  fits_encoder_scale = False

  # ---- parameters -----------------------------------------------------------------------------
  def setup(self):
    cfg = self.config
    norm = cfg.decoder_init_norm
    if norm <= 0:  # The recipe's: small where the decoder is free (SAEConfig.decoder_init_norm).
      norm = 1.0 if self.unit_norm_decoder else 0.1

    layers = cfg.layers
    if layers > 1 and self.n_local % layers:
      raise ValueError(
        f"a cross-layer transcoder over {layers} layers needs each latent shard to hold whole "
        f"features (n_latents / layers = {cfg.n_latents // layers} divisible by the latent shards)"
      )

    def decoder_init(key, shape, dtype=jnp.float32):
      if layers == 1 or self.own_layer_only:
        return unit_rows(key, shape, dtype) * norm
      w = jax.random.normal(key, shape, jnp.float32) * self.decoder_mask()  # Own layer onwards.
      return (w / jnp.linalg.norm(w, axis=-1, keepdims=True) * norm).astype(dtype)

    d_out = cfg.d_target
    d_written = cfg.d_layer_out if self.own_layer_only else d_out
    self.W_dec = self.param(
      "W_dec", _partitioned(decoder_init, ("latents", "embed")), (self.n_local, d_written)
    )
    self.b_dec = self.param("b_dec", _partitioned(nn.initializers.zeros, ("embed",)), (d_out,))

    # W_enc = s·W_decᵀ at init (TopK paper), or s times independent unit directions when
    # untied or a transcoder; s = encoder_init_scale, or 1 until the trainer fits it
    # (`fitted_encoder_scale`). Initializers run only at init time.
    scale = cfg.encoder_init_scale if cfg.encoder_init_scale > 0 else 1.0

    def encoder_init(key, shape):
      if cfg.tied_init and not cfg.transcode:
        return self.W_dec.T * scale
      return unit_rows(key, (self.n_local, cfg.d_layer)).T * scale

    self.W_enc = self.param("W_enc", _partitioned(encoder_init, ("embed", "latents")), (0,))
    self.setup_encoder()
    if cfg.skip:  # Last, so the other parameters' init keys are those of a skipless SAE.
      self.W_skip = self.param(
        "W_skip", _partitioned(nn.initializers.zeros, ("embed", "embed_out")), (cfg.d_in, d_out)
      )

  def setup_encoder(self):
    """Architecture parameters beyond W_enc, W_dec, b_dec (default: b_enc = 0)."""
    self.b_enc = self.latent_param("b_enc", 0.0)

  def latent_param(self, name: str, value: float) -> jax.Array:
    """A float32 per-latent parameter initialized to `value`."""
    return self.param(name, _partitioned(_constant(value), ("latents",)), (self.n_local,))

  @property
  def own_layer_only(self) -> bool:
    """Per-layer transcoders held as one (layers > 1, cross_layer False): W_dec is n × d_out/L,
    each row the block its latent writes to its own layer (`cross_layer`)."""
    return self.config.layers > 1 and not self.config.cross_layer

  @property
  def n_local(self) -> int:
    """Latents held here: n, or n / (latent shards) inside shard_map."""
    return self.config.n_latents // self.axes.latent_shards()

  @classmethod
  def config_problems(cls, cfg: SAEConfig) -> list[str]:
    """Problems with `cfg` specific to this architecture, each with its fix."""
    problems = []
    if cfg.decoder_norm == "penalty" and not cls.has_l1_penalty:
      problems.append(
        f"sae.decoder_norm='penalty' weights an L1 penalty, which {cfg.architecture} does not "
        "have; use 'unit' or 'auto'"
      )
    return problems

  @property
  def unit_norm_decoder(self) -> bool:
    mode = self.config.decoder_norm
    return self.auto_unit_norm_decoder if mode == "auto" else mode == "unit"

  # ---- forward ------------------------------------------------------------------------------
  def matmul(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b in `sae.compute_dtype` with a float32 result (bfloat16 operands accumulate in
    float32; the parameters themselves stay float32)."""
    dtype = jnp.dtype(self.config.compute_dtype)
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)

  def centered_matmul(self, x_BxD: jax.Array, W_DxN: jax.Array) -> jax.Array:
    """(x̃ − b_dec) W, with b_dec's gradient through it as one 1×n·n×d product; x̃ W for a
    transcoder, whose b_dec is on the output side.

    Autodiff of the formula would compute d(x̃ − b_dec) = g Wᵀ, a B×n·n×d matmul (a sixth of a
    ReLU SAE's step), only to sum it over the batch for b_dec: x̃ is data. Here b_dec enters
    stopped in (x̃ − sg(b_dec)) W and again in `b_dec_shift`, exactly 0 in value, whose gradient
    is −(Σ_b g_b) Wᵀ. Values are bitwise the formula's; x̃'s own gradient, if asked for, is
    unchanged.
    """
    if self.config.transcode:
      return self.matmul(x_BxD, W_DxN)
    centered = x_BxD - jax.lax.stop_gradient(self.b_dec)
    return self.matmul(centered, W_DxN) + self.b_dec_shift(W_DxN)

  def b_dec_shift(self, W_DxN: jax.Array) -> jax.Array:
    """(sg(b_dec) − b_dec) sg(W): a row of exact zeros carrying b_dec's encoder-side gradient."""
    b = self.b_dec
    zero_row = (jax.lax.stop_gradient(b) - b)[None, :]
    return self.matmul(zero_row, jax.lax.stop_gradient(W_DxN))

  def pre_activations(self, x_BxD: jax.Array) -> jax.Array:
    """pre = (x̃ − b_dec) W_enc + b_enc (a CLT: x̃_{layer of g} W_enc[:, g] + b_enc)."""
    if self.config.layers > 1:
      pre = cross_layer.pre_activations(x_BxD, self.W_enc, self.config.layers, self.matmul)
      return pre + self.b_enc
    return self.centered_matmul(x_BxD, self.W_enc) + self.b_enc

  def decoder_mask(self) -> jax.Array:
    """A CLT's M: which blocks of each W_dec row its latent may write (`cross_layer`)."""
    index = self.axes.latent_offset(self.n_local) + jnp.arange(self.n_local)
    return cross_layer.decoder_mask(
      index,
      self.config.layers,
      self.config.d_layer_out,
      self.config.cross_layer,
    )

  @property
  def decoder(self) -> jax.Array:
    """The W_dec the forward pass uses: W_dec, or a CLT's M ⊙ W_dec (no gradient to the zero
    blocks, which so stay zero)."""
    if self.config.layers == 1 or self.own_layer_only:
      return self.W_dec
    return self.W_dec * self.decoder_mask()

  def write(self, z_BxN: jax.Array) -> jax.Array:
    """z W_dec on this shard's latents (before the sum over latent shards and b_dec); per-layer
    transcoders multiply block by block (`cross_layer.own_layer_decode`)."""
    if self.own_layer_only:
      return cross_layer.own_layer_decode(z_BxN, self.W_dec, self.config.layers, self.matmul)
    return self.matmul(z_BxN, self.decoder)

  def output_bias(self, x_BxD: jax.Array | None = None) -> jax.Array:
    """The part of ŷ the latents do not write: b_dec, plus x̃ W_skip with a skip connection."""
    if not self.config.skip:
      return self.b_dec
    if x_BxD is None:
      raise ValueError("this dictionary has a skip connection: decode(z, x) needs the input x")
    return self.matmul(x_BxD, self.W_skip) + self.b_dec

  def decode(self, z_BxN: jax.Array, x_BxD: jax.Array | None = None) -> jax.Array:
    """ŷ = z W_dec + b_dec (+ x̃ W_skip, which needs the input x̃); partial products summed
    over latent shards."""
    return self.axes.sum_latents(self.write(z_BxN)) + self.output_bias(x_BxD)

  def __call__(self, x_BxD: jax.Array) -> jax.Array:
    """The reconstruction (an SAE) or prediction (a transcoder) at inference."""
    return self.decode(self.encode(x_BxD).latents, x_BxD)

  # ---- loss ---------------------------------------------------------------------------------
  def global_index(self) -> jax.Array:
    """Global index of each local latent."""
    n_local = self.W_dec.shape[0]
    return self.axes.latent_offset(n_local) + jnp.arange(n_local)

  def mean_over_tokens(self, per_token_B: jax.Array) -> jax.Array:
    """Mean over the global batch of a per-token quantity."""
    n_tokens = per_token_B.shape[0] * self.axes.batch_shards()
    return self.axes.sum_batch(per_token_B.sum()) / n_tokens

  def reconstruction_error(self, y_BxO: jax.Array, y_hat_BxO: jax.Array) -> jax.Array:
    """mean over tokens of ‖ỹ − ŷ‖² / d_out; a CLT's Σ_l ‖ỹ_l − ŷ_l‖² / sg(‖ỹ_l − ȳ_l‖²)
    (batch sums: each layer's normalized MSE, `cross_layer`)."""
    layers = self.config.layers
    if layers > 1:
      y = jax.lax.stop_gradient(y_BxO)
      n_tokens = y.shape[0] * self.axes.batch_shards()
      mean = self.axes.sum_batch(y.sum(0)) / n_tokens
      var = self.axes.sum_batch(cross_layer.per_layer_sums((y - mean) ** 2, layers))
      err = self.axes.sum_batch(cross_layer.per_layer_sums((y_BxO - y_hat_BxO) ** 2, layers))
      return jnp.sum(err / jnp.maximum(var, 1e-12))
    return self.mean_over_tokens(jnp.sum((y_BxO - y_hat_BxO) ** 2, axis=-1)) / y_BxO.shape[-1]

  def reconstruction_term(
    self, x_BxD: jax.Array, y_BxO: jax.Array, z_BxN: jax.Array, y_hat_BxO: jax.Array | None = None
  ) -> jax.Array:
    """The error of ŷ against ỹ, or with Matryoshka Σ_m error(z[:m] W_dec[:m] + b_dec [+ x̃
    W_skip]). (`y_hat_BxO`: decode(z, x) if already computed.)"""
    prefixes = self.config.prefixes
    if len(prefixes) == 1:
      y_hat = self.decode(z_BxN, x_BxD) if y_hat_BxO is None else y_hat_BxO
      return self.reconstruction_error(y_BxO, y_hat)
    index = self.global_index()
    return sum(
      self.reconstruction_error(y_BxO, self.decode(jnp.where(index < m, z_BxN, 0.0), x_BxD))
      for m in prefixes
    )

  def decoder_row_norms(self) -> jax.Array:
    """‖W_dec row‖ of each latent (a CLT's over every layer it writes)."""
    return jnp.linalg.norm(self.decoder, axis=-1)

  def l1_penalty(self, z_BxN: jax.Array) -> jax.Array:
    """Σ_i |z_i| (unit decoder) or Σ_i |z_i| ‖w_i‖ (decoder_norm=penalty), mean over tokens."""
    weights = 1.0 if self.unit_norm_decoder else self.decoder_row_norms()
    return self.mean_over_tokens(self.axes.sum_latents(jnp.sum(jnp.abs(z_BxN) * weights, -1)))

  def tanh_penalty(self, z_BxN: jax.Array) -> jax.Array:
    """Σ_i tanh(c·|z_i|·‖w_i‖), mean over tokens (`SAEConfig.tanh_c`)."""
    c = self.config.tanh_c
    per_latent = jnp.tanh(c * jnp.abs(z_BxN) * self.decoder_row_norms())
    return self.mean_over_tokens(self.axes.sum_latents(jnp.sum(per_latent, -1)))

  def extra_terms(
    self,
    x_BxD: jax.Array,
    y_BxO: jax.Array,
    y_hat_BxO: jax.Array,
    enc: Encoding,
    hyper: Hyper,
    dead_N: jax.Array | None,
  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Architecture-specific (terms, stats): sparsity penalties, AuxK, Gated's aux loss…
    (x̃ the input, ỹ the target, ŷ the output; dead_N None: no latent is dead.)"""
    return {}, {}

  def loss(
    self,
    x_BxD: jax.Array,
    hyper: Hyper | None = None,
    dead_N: jax.Array | None = None,
    train: bool = True,
    target: jax.Array | None = None,
  ) -> LossOutput:
    """The training loss on a batch of normalized inputs x̃ (and targets ỹ), its named terms,
    and statistics.

    Args:
      x_BxD: inputs scaled to E‖x̃‖² = d (this shard's rows).
      hyper: traced hyperparameters (default: the config's).
      dead_N: bool per latent, True for latents dead by the trainer's token window (AuxK);
        None when none is: AuxK is then 0 and its top-k is skipped (`has_aux_k`).
      train: BatchTopK selects over the batch when training, by its threshold otherwise.
      target: ỹ (B×d_out), the same tokens' activations at the site a transcoder writes,
        scaled to E‖ỹ‖² = d_out; None: x̃ itself (an SAE).
    """
    hyper = Hyper.of(self.config) if hyper is None else hyper
    y = x_BxD if target is None else target
    enc = self.encode(x_BxD, hyper, train=train)
    y_hat = self.decode(enc.latents, x_BxD)
    terms = {"reconstruction": self.reconstruction_term(x_BxD, y, enc.latents, y_hat)}
    extra_terms, extra_stats = self.extra_terms(x_BxD, y, y_hat, enc, hyper, dead_N)
    terms.update(extra_terms)
    stats = {**self.statistics(y, y_hat, enc.latents), **extra_stats}
    return LossOutput(sum(terms.values()), terms, stats)

  def statistics(self, y_BxO, y_hat_BxO, z_BxN, fired_N=None) -> dict[str, jax.Array]:
    """l0, batch FVU of ŷ against the target ỹ (and its batch mean), and per-latent firing
    counts (k-set only).

    z may be any code whose nonzeros are the active latents (B×n, or B×k with `fired_N`, this
    shard's firing counts, given)."""
    z = jax.lax.stop_gradient(z_BxN)
    l0 = self.mean_over_tokens(self.axes.sum_latents(jnp.sum(z != 0, -1).astype(jnp.float32)))
    if fired_N is None:
      fired_N = jnp.sum(z > FIRE_THRESHOLD, axis=0, dtype=jnp.int32)
    fvu = self.batch_fvu(y_BxO, y_hat_BxO)
    return {"l0": l0, "fvu": fvu, "fired": self.axes.sum_batch(fired_N)}

  def batch_fvu(self, y_BxO, y_hat_BxO) -> jax.Array:
    """Σ‖ỹ − ŷ‖² / Σ‖ỹ − mean(ỹ)‖² over the global batch."""
    x, x_hat = jax.lax.stop_gradient((y_BxO, y_hat_BxO))
    n_tokens = x.shape[0] * self.axes.batch_shards()
    mean_D = self.axes.sum_batch(x.sum(0)) / n_tokens
    err = self.axes.sum_batch(jnp.sum((x - x_hat) ** 2))
    var = self.axes.sum_batch(jnp.sum((x - mean_D) ** 2))
    return err / var

  def fitted_encoder_scale(
    self, x_BxD: jax.Array, hyper: Hyper | None = None, target: jax.Array | None = None
  ) -> jax.Array:
    """The s minimizing Σ‖ỹ − c − s·y‖² with y = ŷ − c, c = b_dec (+ x̃ W_skip), of the
    current parameters: s = Σ⟨ỹ − c, y⟩ / Σ‖y‖² (ỹ = `target`, or x̃ for an SAE). With z
    linear in W_enc's scale (b_enc = 0, a top-k selection), W_enc ← s·W_enc makes the output
    c + s·y: the least-squares initial one. 1 when that is not a positive number."""
    target = x_BxD if target is None else target
    bias = self.output_bias(x_BxD)
    y = self.decode(self.encode(x_BxD, hyper, train=True).latents, x_BxD) - bias
    yy = jnp.sum(y * y)
    xy = jnp.sum((target - bias) * y)
    ok = (yy > 0) & (xy > 0)
    return jnp.where(ok, xy / jnp.where(ok, yy, 1.0), 1.0)

  # ---- buffers and constraints --------------------------------------------------------------
  def updated_buffers(self, stats: dict[str, jax.Array]) -> dict[str, Any]:
    """Non-trained state after a training step (BatchTopK's threshold); default: none."""
    return {}

  def constrain(self, params: dict[str, Any]) -> dict[str, Any]:
    """Project parameters back onto their constraint set after an optimizer step."""
    if self.unit_norm_decoder:
      w = params["W_dec"]
      params = {**params, "W_dec": w / jnp.linalg.norm(w, axis=-1, keepdims=True)}
    return params
