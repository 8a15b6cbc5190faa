"""Input scaling and the decoder-bias init: what the SAE sees, and how exports undo it.

The trainer feeds x̃ = c·x with one scalar c chosen on a sample so that E‖x̃‖² = d (each
coordinate of order one). c is stored in the checkpoint metadata; `fold_scale` moves it into
the weights so an exported SAE takes raw activations:

    pre = (c x − b_dec) W_enc + b_enc = (x − b_dec/c)(c W_enc) + b_enc
    x̂_raw = x̂/c = z (W_dec/c) + b_dec/c

Thresholds (JumpReLU θ, BatchTopK θ) live in pre-activation space and do not change. A
transcoder has a second scale c_y for its targets (ỹ = c_y·y) and no b_dec on its input side:

    pre = (c x) W_enc + b_enc = x (c W_enc) + b_enc
    ŷ_raw = ŷ/c_y = z (W_dec/c_y) + b_dec/c_y + x (c/c_y · W_skip)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError


def check_finite(x: np.ndarray, what: str) -> None:
  if not np.all(np.isfinite(x)):
    bad = int(np.sum(~np.isfinite(x)))
    raise JaxsaeError(
      f"{what} holds {bad} NaN or Inf value(s); fix the activations at their source (a "
      "diverged model, or a corrupt store) before training an SAE on them"
    )


def estimate_scale(sample_NxD: np.ndarray) -> float:
  """c with E‖c x‖² = d over the sample: the one definition of the input scale, the trainer's c
  and the scale a harvest records with its store."""
  sample = np.asarray(sample_NxD, np.float64)
  check_finite(sample, "the normalization sample")
  mean_sq_norm = float(np.mean(np.sum(sample**2, axis=-1)))
  if mean_sq_norm <= 0:
    raise JaxsaeError("the activations are all zero; there is nothing to train an SAE on")
  return float(np.sqrt(sample.shape[-1] / mean_sq_norm))


def geometric_median(points_NxD: jax.Array, iterations: int = 100, eps: float = 1e-8) -> jax.Array:
  """argmin_y Σ‖x_i − y‖ by Weiszfeld's iteration, started at the mean."""
  points = jnp.asarray(points_NxD, jnp.float32)

  def step(y, _):
    weights = 1.0 / jnp.maximum(jnp.linalg.norm(points - y, axis=-1), eps)
    return (weights[:, None] * points).sum(0) / weights.sum(), None

  median, _ = jax.lax.scan(step, points.mean(0), None, length=iterations)
  return median


def fold_scale(
  params: dict[str, Any], scale: float, target_scale: float | None = None
) -> dict[str, Any]:
  """Parameters that act on raw activations x, given ones trained on x̃ = scale·x (and, for a
  transcoder, targets ỹ = target_scale·y; None: the inputs' scale)."""
  out_scale = scale if target_scale is None else target_scale
  folded = dict(params)
  folded["W_enc"] = params["W_enc"] * scale
  folded["W_dec"] = params["W_dec"] / out_scale
  folded["b_dec"] = params["b_dec"] / out_scale
  if "W_skip" in params:
    folded["W_skip"] = params["W_skip"] * (scale / out_scale)
  return folded
