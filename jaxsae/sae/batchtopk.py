"""BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders").

Training keeps the k·B largest entries of ReLU(pre) over the whole batch of B tokens (the global
batch: exact across data and latent shards), so k is the average L0 and tokens may use more or
fewer latents. At inference it is a JumpReLU with one threshold θ, the EMA of the smallest kept
activation over training batches (`updated_buffers`), so a token's code does not depend on the
other tokens. AuxK and Matryoshka work as for TopK; Multi-TopK is a TopK-only option.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae import collectives
from jaxsae.sae.base import Encoding, Hyper
from jaxsae.sae.topk import TopKSAE


class BatchTopKSAE(TopKSAE):
  has_sparse_path = False  # Its selection is over the batch: it trains on the dense path.

  def setup_encoder(self):
    super().setup_encoder()
    # -1 until the first training batch sets it.
    self.threshold = self.variable("buffers", "threshold", lambda: jnp.asarray(-1.0, jnp.float32))

  @classmethod
  def config_problems(cls, cfg) -> list[str]:
    problems = super().config_problems(cfg)
    if cfg.multi_topk:
      problems.append("sae.multi_topk is TopK-only; use architecture=topk or turn it off")
    return problems

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    pre = self.pre_activations(x_BxD)
    acts = jax.nn.relu(pre)
    if not train:
      return Encoding(jnp.where(pre > self.threshold.value, acts, 0.0), pre)
    tokens = x_BxD.shape[0] * self.axes.batch_shards()
    k = self.config.k if hyper is None else hyper.k
    kth = collectives.kth_largest_over_batch(acts, k * tokens, self.config.k * tokens, self.axes)
    return Encoding(jnp.where((acts >= kth) & (acts > 0), acts, 0.0), pre)

  def extra_terms(self, x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N):
    terms, stats = super().extra_terms(x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N)
    kept = jnp.where(enc.latents > 0, jax.lax.stop_gradient(enc.latents), jnp.inf)
    stats["batch_threshold"] = self.axes.min_all(jnp.min(kept))
    return terms, stats

  def updated_buffers(self, stats):
    """θ ← m θ + (1 − m) · (smallest kept activation); the first batch sets θ directly."""
    old, new = self.threshold.value, stats["batch_threshold"]
    new = jnp.where(jnp.isfinite(new), new, old)  # A batch with nothing kept changes nothing.
    m = self.config.batchtopk_momentum
    return {"threshold": jnp.where(old < 0, new, m * old + (1 - m) * new)}
