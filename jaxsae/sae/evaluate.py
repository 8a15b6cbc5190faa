"""Reconstruction metrics of a trained SAE on held-out activations (one definition each).

    L0   = mean over tokens of #{i : z_i ≠ 0}
    FVU  = Σ‖x − x̂‖² / Σ‖x − x̄‖², sums and the mean x̄ over the whole evaluation set
    dead = share of latents that never fire (z > 1e-3) on the set

The SAE sees c·x (it was trained on that scale) and x̂ is scaled back, so FVU is in raw units
(it does not depend on c). BatchTopK runs in inference mode (its threshold), like an exported SAE.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.sae import registry
from jaxsae.sae.base import FIRE_THRESHOLD
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.data import ActivationSource


def reconstruction_metrics(
  config: SAEConfig,
  variables: dict[str, Any],
  scale: float,
  source: ActivationSource,
  batch_size: int = 4096,
) -> dict[str, float]:
  """L0, FVU and dead fraction of an SAE (trained on scale·x) on raw rows from `source`."""
  sae = registry.build(config)

  def encode_decode(variables, x):
    z = sae.apply(variables, x * scale, method="encode").latents
    return z, sae.apply(variables, z, method="decode") / scale

  return metrics_of(encode_decode, variables, source, batch_size)


def metrics_of(encode_decode, variables: Any, source: ActivationSource, batch_size: int = 4096):
  """The metrics above for any `encode_decode(variables, x) -> (codes, x̂)` (SAEs, baselines)."""

  @jax.jit
  def batch_sums(variables, x):
    z, x_hat = encode_decode(variables, x)
    return {
      "err": jnp.sum((x - x_hat) ** 2),
      "sum": x.sum(0),
      "sq": jnp.sum(x**2),
      "nonzero": jnp.sum(z != 0),
      "fired": jnp.sum(z > FIRE_THRESHOLD, axis=0),
    }

  totals, n = None, len(source)
  for start in range(0, n, batch_size):
    rows = source.rows(np.arange(start, min(start + batch_size, n)))
    sums = jax.device_get(batch_sums(variables, jnp.asarray(rows)))
    sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
  mean = totals["sum"] / n
  variance = totals["sq"] - n * float(mean @ mean)
  return {
    "l0": float(totals["nonzero"] / n),
    "fvu": float(totals["err"] / variance),
    "dead_fraction": float(np.mean(totals["fired"] == 0)),
  }
