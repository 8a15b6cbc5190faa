"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    z = ReLU(TopK_k(pre))                                   (eq. 2)
    L = ‖x̃ − x̂‖² [+ L(4k)/8 with Multi-TopK] [+ α L_aux]

AuxK (section A.2): with e = sg(x̃ − x̂) and z_aux = ReLU(TopK_{k_aux}(pre on dead latents)),
    ê = z_aux W_dec            (no b_dec: it is already in x̂)
    L_aux = ‖e − ê‖² / ‖e − ē‖²  (sums over the batch; ē the batch mean of e)
It is zero when no latent is dead. Dead statistics count the k-set only, never the 4k set.
The top-k is exact when latents are split across devices (`collectives.top_k_over_latents`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae import collectives
from jaxsae.sae.base import Encoding, Hyper, SparseAutoencoder


def top_k_latents(pre_BxN: jax.Array, k_max: int, k: jax.Array, axes) -> jax.Array:
  """ReLU of the k largest pre-activations of each row, the rest zero (k ≤ k_max traced)."""
  values, indices = collectives.top_k_over_latents(pre_BxN, k_max, axes)
  values = jnp.where(jnp.arange(k_max) < k, jax.nn.relu(values), 0.0).astype(pre_BxN.dtype)
  return collectives.scatter_latents(values, indices, pre_BxN.shape[-1])


class TopKSAE(SparseAutoencoder):
  """TopK activation with optional AuxK, Multi-TopK and Matryoshka terms."""

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    pre = self.pre_activations(x_BxD)
    k = self.config.k if hyper is None else hyper.k
    return Encoding(top_k_latents(pre, self.config.k, k, self.axes), pre)

  def extra_terms(self, x_BxD, x_hat_BxD, enc, hyper, dead_N):
    cfg, terms, stats = self.config, {}, {}
    if cfg.multi_topk:
      z4 = top_k_latents(enc.pre, 4 * cfg.k, 4 * hyper.k, self.axes)
      terms["multi_topk"] = self.reconstruction_term(x_BxD, z4) / 8
    if cfg.aux_k > 0:
      aux, n_dead = self.aux_k_loss(x_BxD, x_hat_BxD, enc.pre, dead_N)
      terms["aux_k"] = hyper.aux_alpha * aux
      stats["aux_k_loss"], stats["dead"] = jax.lax.stop_gradient(aux), n_dead
    return terms, stats

  def aux_k_loss(self, x_BxD, x_hat_BxD, pre_BxN, dead_N) -> tuple[jax.Array, jax.Array]:
    """(L_aux, number of dead latents): the dead latents' top-k_aux reconstruct the residual."""
    axes = self.axes
    e = jax.lax.stop_gradient(x_BxD - x_hat_BxD)
    n_dead = axes.sum_latents(jnp.sum(dead_N, dtype=jnp.int32))
    k_aux = min(self.config.aux_k, self.config.n_latents)
    dead_pre = jnp.where(dead_N, pre_BxN, -jnp.inf)
    z_aux = top_k_latents(dead_pre, k_aux, k_aux, axes)  # Live latents: ReLU(-inf) = 0.
    e_hat = axes.sum_latents(z_aux @ self.W_dec)
    n_tokens = e.shape[0] * axes.batch_shards()
    e_mean = axes.sum_batch(e.sum(0)) / n_tokens
    num = axes.sum_batch(jnp.sum((e - e_hat) ** 2))
    den = axes.sum_batch(jnp.sum((e - e_mean) ** 2))
    aux = jnp.where(n_dead > 0, num / jnp.maximum(den, 1e-30), 0.0)
    return aux, n_dead
