"""Reconstruction metrics of a trained SAE on held-out activations (one definition each).

    L0   = mean over tokens of #{i : z_i ≠ 0}
    FVU  = Σ‖x − x̂‖² / Σ‖x − x̄‖², sums and the mean x̄ over the whole evaluation set
    dead = share of latents that never fire (z > 1e-3) on the set

Inputs are scaled by the training scale c first (FVU and L0 do not depend on it; the SAE was
trained on c·x). BatchTopK runs in inference mode (its threshold), like an exported SAE.
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
  sae = registry.build(config)

  @jax.jit
  def batch_sums(variables, x):
    x = x * scale
    z = sae.apply(variables, x, method="encode").latents
    x_hat = sae.apply(variables, z, method="decode")
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
