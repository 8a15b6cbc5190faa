"""Reconstruction metrics of a trained SAE on held-out activations (one definition each).

    L0   = mean over tokens of #{i : z_i ≠ 0}
    FVU  = Σ‖x − x̂‖² / Σ‖x − x̄‖², sums and the mean x̄ over the whole evaluation set
    dead = share of latents that never fire (z > 1e-3) on the set
    MSE  = mean over tokens of ‖x − x̂‖² (raw units); shrinkage γ = E‖x̂‖² / E⟨x, x̂⟩

The SAE sees c·x (it was trained on that scale) and x̂ is scaled back, so FVU is in raw units
(it does not depend on c). BatchTopK runs in inference mode (its threshold), like an exported SAE.
A transcoder's metrics compare its output ŷ (scaled back by its target scale) with the target
rows of a `row_sources.PairSource`: x above is then the target y.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.evals.metrics import ReconstructionSums
from jaxsae.sae import registry
from jaxsae.sae.base import FIRE_THRESHOLD
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.row_sources import ActivationSource, is_paired


def encode_decode(config: SAEConfig, scale: float = 1.0, target_scale: float | None = None):
  """`(variables, raw x) -> (latents, x̂ in raw units)` for an SAE trained on scale·x (a
  transcoder's ŷ, trained on target_scale·y)."""
  sae = registry.build(config)
  out_scale = scale if target_scale is None else target_scale

  def fn(variables, x):
    x = x * scale
    z = sae.apply(variables, x, method="encode").latents
    return z, sae.apply(variables, z, x, method="decode") / out_scale

  return fn


def decode_fn(config: SAEConfig, scale: float = 1.0):
  """`(variables, latents) -> x̂ in raw units` for an SAE trained on scale·x."""
  sae = registry.build(config)
  return lambda variables, z: sae.apply(variables, z, method="decode") / scale


def reconstruction_metrics(
  config: SAEConfig,
  variables: dict[str, Any],
  scale: float,
  source: ActivationSource,
  batch_size: int = 4096,
  target_scale: float | None = None,
) -> dict[str, float]:
  """L0, FVU and dead fraction of an SAE (trained on scale·x) on raw rows from `source`; of a
  transcoder (targets scaled by target_scale) on a PairSource's raw pairs."""
  fn = encode_decode(config, scale, target_scale)
  return metrics_of(fn, variables, source, batch_size)


def metrics_of(encode_decode, variables: Any, source: ActivationSource, batch_size: int = 4096):
  """The metrics above for any `encode_decode(variables, x) -> (codes, x̂)` (SAEs, baselines).

  Per-batch sums are reduced on the device; the FVU comes from `evals.metrics` over the
  whole set. With a PairSource the outputs are compared with its target rows.
  """

  @jax.jit
  def batch_sums(variables, inputs, x):
    z, x_hat = encode_decode(variables, inputs)
    return {
      "sum_x": x.sum(0),
      "sum_sq_x": jnp.sum(x**2),
      "sum_sq_err": jnp.sum((x - x_hat) ** 2),
      "sum_sq_x_hat": jnp.sum(x_hat**2),
      "sum_dot": jnp.sum(x * x_hat),
      "nonzero": jnp.sum(z != 0),
      "fired": jnp.sum(z > FIRE_THRESHOLD, axis=0),
    }

  n = len(source)
  sums, nonzero, fired = ReconstructionSums(), 0.0, None
  for start in range(0, n, batch_size):
    index = np.arange(start, min(start + batch_size, n))
    rows = source.rows(index)
    targets = source.target_rows(index) if is_paired(source) else rows
    sums_of = batch_sums(variables, jnp.asarray(rows), jnp.asarray(targets))
    out = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums_of).items()}
    nonzero += float(out.pop("nonzero"))
    fired = out["fired"] if fired is None else fired + out["fired"]
    out.pop("fired")
    sums.add_sums(len(rows), **out)
  return {
    "l0": nonzero / n,
    "fvu": sums.fvu,
    "dead_fraction": float(np.mean(fired == 0)),
    "mse": sums.mse,
    "shrinkage": sums.shrinkage,
  }
