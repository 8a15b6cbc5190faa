"""Activation shrinkage measured by refinement, as in the TopK paper (Gao et al. 2024, "Scaling
and evaluating sparse autoencoders", on activation shrinkage).

An L1 penalty pulls activations toward 0. To see by how much, keep the decoder fixed and
re-optimize the code of each token:

    z* = argmin_{z ≥ 0, z ∈ S} ½‖x − z W_dec − b_dec‖²

by projected gradient descent, with S the SAE's own support ("fixed": only latents nonzero in
the SAE's code move, the others stay 0) or all latents ("free"). One step, from the SAE's code:

    z ← P_S(max(0, y − η·(y W_dec + b_dec − x) W_decᵀ))

with η = 1/λ_max(W_dec W_decᵀ), the Lipschitz constant of the gradient; λ_max is estimated by
power iteration on the d×d matrix W_decᵀ W_dec (the same nonzero eigenvalues, and cheap). The
Rayleigh quotient is a lower bound on λ_max, so η can exceed 1/λ_max by a hair: plain projected
gradient converges for any η < 2/λ_max, and the accelerated version restarts (below).

Acceleration (default on) is FISTA (Beck & Teboulle 2009): y is z plus momentum
(t_k − 1)/t_{k+1}·(z_k − z_{k−1}), with the gradient restart of O'Donoghue & Candès (2015) per
token — momentum is dropped whenever ⟨y − z_{k+1}, z_{k+1} − z_k⟩ > 0 — so it never does worse
than a few plain steps. With `accelerate=False` y = z (plain projected gradient). Matrix products
run at full float32 precision (no TF32/bf16 passes), tokens in chunks to bound memory.

x, W_dec and b_dec must be in the same units, those of the SAE's input: for an SAE trained on
c·x pass c·x with the stored W_dec and b_dec, or raw x with the exported (scale-folded) ones.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.evals.metrics import ReconstructionSums

SUPPORTS = ("fixed", "free")
_HIGHEST = jax.lax.Precision.HIGHEST


def _dot(a, b):
  return jnp.matmul(a, b, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=("iterations",))
def max_eigenvalue(W_dec_MxD: jax.Array, iterations: int = 100) -> jax.Array:
  """λ_max(W_dec W_decᵀ) by power iteration on the smaller of W_decᵀW_dec and W_dec W_decᵀ."""
  w = jnp.asarray(W_dec_MxD, jnp.float32)
  gram = _dot(w.T, w) if w.shape[1] <= w.shape[0] else _dot(w, w.T)
  v0 = jax.random.normal(jax.random.key(0), (gram.shape[0],), jnp.float32)

  def step(_, v):
    u = _dot(gram, v)
    return u / jnp.maximum(jnp.linalg.norm(u), 1e-30)

  v = jax.lax.fori_loop(0, iterations, step, v0 / jnp.linalg.norm(v0))
  return v @ _dot(gram, v)


@functools.partial(jax.jit, static_argnames=("steps", "free", "accelerate"))
def _refine_chunk(z_NxM, x_NxD, W_dec_MxD, b_dec_D, lr, *, steps, free, accelerate):
  mask_NxM = jnp.ones(z_NxM.shape, bool) if free else z_NxM != 0
  target_NxD = x_NxD - b_dec_D

  def project(v_NxM):
    return jnp.where(mask_NxM, jnp.maximum(v_NxM, 0.0), 0.0)

  def body(_, state):
    z_NxM, y_NxM, t_N = state
    residual_NxD = _dot(y_NxM, W_dec_MxD) - target_NxD
    z_new_NxM = project(y_NxM - lr * _dot(residual_NxD, W_dec_MxD.T))
    if not accelerate:
      return z_new_NxM, z_new_NxM, t_N
    restart_N = jnp.sum((y_NxM - z_new_NxM) * (z_new_NxM - z_NxM), axis=-1) > 0
    t_N = jnp.where(restart_N, 1.0, t_N)
    t_next_N = (1.0 + jnp.sqrt(1.0 + 4.0 * t_N**2)) / 2.0
    momentum_N = (t_N - 1.0) / t_next_N
    y_new_NxM = z_new_NxM + momentum_N[:, None] * (z_new_NxM - z_NxM)
    return z_new_NxM, y_new_NxM, t_next_N

  z0_NxM = project(z_NxM)
  t0_N = jnp.ones(z_NxM.shape[0], jnp.float32)
  return jax.lax.fori_loop(0, steps, body, (z0_NxM, z0_NxM, t0_N))[0]


def _check_inputs(z_NxM, x_NxD, W_dec_MxD, b_dec_D, support, steps, lr):
  if support not in SUPPORTS:
    raise JaxsaeError(f"support must be one of {SUPPORTS}, got {support!r}")
  if int(steps) != steps or steps < 0:
    raise JaxsaeError(f"steps must be a non-negative integer, got {steps!r}")
  if lr is not None and not (np.isfinite(lr) and lr > 0):
    raise JaxsaeError(f"lr must be a positive step size (or None for 1/λ_max), got {lr!r}")
  shapes = {
    "z": np.shape(z_NxM),
    "x": np.shape(x_NxD),
    "W_dec": np.shape(W_dec_MxD),
    "b_dec": np.shape(b_dec_D),
  }
  if any(len(shapes[k]) != 2 for k in ("z", "x", "W_dec")) or len(shapes["b_dec"]) != 1:
    raise JaxsaeError(f"expected z N×M, x N×D, W_dec M×D and b_dec D, got shapes {shapes}")
  (n, m), (nx, d) = shapes["z"], shapes["x"]
  if nx != n or shapes["W_dec"] != (m, d) or shapes["b_dec"] != (d,):
    raise JaxsaeError(
      f"shapes do not agree: {shapes} (need z N×M, x N×D, W_dec M×D, b_dec D); pass the codes, "
      "inputs and decoder of one SAE, tokens in the same order"
    )


def refine_latents(
  z_NxM,
  x_NxD,
  W_dec_MxD,
  b_dec_D,
  support: str = "fixed",
  steps: int = 200,
  lr: float | None = None,
  *,
  accelerate: bool = True,
  chunk_size: int = 4096,
) -> jax.Array:
  """The SAE's codes z ≥ 0 after `steps` projected-gradient steps on ½‖x − z W_dec − b_dec‖².

  `support`: "fixed" keeps every latent that is 0 in z at 0; "free" lets all latents move.
  `lr`: step size, by default 1/λ_max(W_dec W_decᵀ). Tokens run `chunk_size` at a time (the last
  chunk padded with zero rows so one compilation serves them all). Returns N×M float32.
  """
  _check_inputs(z_NxM, x_NxD, W_dec_MxD, b_dec_D, support, steps, lr)
  z = jnp.asarray(z_NxM, jnp.float32)
  x = jnp.asarray(x_NxD, jnp.float32)
  w = jnp.asarray(W_dec_MxD, jnp.float32)
  b = jnp.asarray(b_dec_D, jnp.float32)
  if not bool(jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(x))):
    raise JaxsaeError("z or x holds NaN or Inf values; fix the activations or the SAE first")
  if bool(jnp.any(z < 0)):
    raise JaxsaeError(
      "z has negative entries; refinement is over nonnegative codes (ReLU, TopK, JumpReLU): pass "
      "the SAE's latents after its activation function"
    )
  if lr is None:
    lam = float(max_eigenvalue(w))
    if not lam > 0:
      raise JaxsaeError("W_dec is all zero; there is no decoder to refine against")
    lr = 1.0 / lam
  n = z.shape[0]
  if n == 0:
    return z
  chunk = max(1, min(int(chunk_size), n))
  run = functools.partial(
    _refine_chunk, steps=int(steps), free=support == "free", accelerate=bool(accelerate)
  )
  lr = jnp.float32(lr)
  out = []
  for start in range(0, n, chunk):
    z_c, x_c = z[start : start + chunk], x[start : start + chunk]
    pad = chunk - z_c.shape[0]
    if pad:
      z_c, x_c = jnp.pad(z_c, ((0, pad), (0, 0))), jnp.pad(x_c, ((0, pad), (0, 0)))
    out.append(run(z_c, x_c, w, b, lr)[: chunk - pad])
  return out[0] if len(out) == 1 else jnp.concatenate(out)


def refined_reconstruction(
  z_NxM, x_NxD, W_dec_MxD, b_dec_D, support: str = "fixed", steps: int = 200, lr=None, **kwargs
) -> jax.Array:
  """x̂ = z* W_dec + b_dec with z* from `refine_latents` (to splice into a model for ΔCE)."""
  z = refine_latents(z_NxM, x_NxD, W_dec_MxD, b_dec_D, support, steps, lr, **kwargs)
  return _dot(z, jnp.asarray(W_dec_MxD, jnp.float32)) + jnp.asarray(b_dec_D, jnp.float32)


def _fvu(sums: ReconstructionSums) -> float:
  """The FVU, nan when the tokens have no variance (a single token, or all equal)."""
  try:
    return sums.fvu
  except ZeroDivisionError:
    return float("nan")


def shrinkage_report(
  z_NxM,
  x_NxD,
  W_dec_MxD,
  b_dec_D,
  support: str = "fixed",
  steps: int = 200,
  lr=None,
  *,
  l0_threshold: float = 0.0,
  **kwargs,
) -> dict[str, float]:
  """How much refinement grows the codes and improves the reconstruction, over the given tokens.

      activation_growth = mean over tokens with z ≠ 0 of ‖z*‖₁ / ‖z‖₁   (≈ 1/shrink factor)
      norm_growth       = Σ‖z*‖₂² / Σ‖z‖₂²
      mse_before/after  = mean over tokens of ‖x − x̂‖²
      fvu_before/after  = Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the mean over the given tokens (nan for one)
      l0_before/after   = mean over tokens of #{i : z_i > l0_threshold}   (default: z_i ≠ 0)
      shrinkage_before/after = Σ‖x̂‖² / Σ⟨x, x̂⟩ (`evals.metrics`; 1 means no shrinkage)

  Tokens whose SAE code is all zero are left out of activation_growth only; with free support
  they may gain latents, which shows in norm_growth and l0_after. With free support, latents
  whose optimum is 0 can end at float-rounding level (~1e-7 of the code's scale) instead of
  exactly 0; a small `l0_threshold` keeps those out of l0_after. Other keyword arguments go to
  `refine_latents`.
  """
  z_ref = refine_latents(z_NxM, x_NxD, W_dec_MxD, b_dec_D, support, steps, lr, **kwargs)
  z = jnp.asarray(z_NxM, jnp.float32)
  w, b = jnp.asarray(W_dec_MxD, jnp.float32), jnp.asarray(b_dec_D, jnp.float32)
  x = np.asarray(x_NxD, np.float64)
  l1_N = np.asarray(jnp.sum(jnp.abs(z), -1), np.float64)
  l1_ref_N = np.asarray(jnp.sum(jnp.abs(z_ref), -1), np.float64)
  active = l1_N > 0
  sq, sq_ref = float(jnp.sum(z**2)), float(jnp.sum(z_ref**2))
  before = ReconstructionSums().add(x, np.asarray(_dot(z, w) + b))
  after = ReconstructionSums().add(x, np.asarray(_dot(z_ref, w) + b))
  return {
    "activation_growth": float(np.mean(l1_ref_N[active] / l1_N[active]))
    if active.any()
    else np.nan,
    "norm_growth": sq_ref / sq if sq > 0 else np.nan,
    "mse_before": before.mse,
    "mse_after": after.mse,
    "fvu_before": _fvu(before),
    "fvu_after": _fvu(after),
    "l0_before": float(jnp.mean(jnp.sum(z > l0_threshold, -1))),
    "l0_after": float(jnp.mean(jnp.sum(z_ref > l0_threshold, -1))),
    "shrinkage_before": before.shrinkage,
    "shrinkage_after": after.shrinkage,
  }
