"""Activation functions whose useful gradients autodiff cannot give: written with custom_vjp.

JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead", eqs. 11–12) with the rectangle kernel
K(u) = 1[|u| < ½] and bandwidth ε:
    z = pre · H(pre − θ)
    ∂z/∂pre = H(pre − θ),   ∂z/∂θ = −(θ/ε) K((pre − θ)/ε)
    step:  H(pre − θ),      ∂H/∂pre = 0,   ∂H/∂θ = −(1/ε) K((pre − θ)/ε)
The step acts on the pre-activations, not on z. θ stays float32 (in bfloat16 it stops
learning); its gradient is summed over every leading (batch) axis.

ProLU (Taggart 2024), m = (x̃ − b_dec) W_enc without bias, per-latent bias b:
    z = m · 1[m > 0] · 1[m + b > 0],   g = upstream ⊙ gate
    ProLU-ReLU: ∂m = g, ∂b = g          ProLU-STE: ∂m = g·(1 + m), ∂b = g·m
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def rectangle(u: jax.Array) -> jax.Array:
  """K(u) = 1[|u| < ½]: the kernel of the JumpReLU pseudo-derivative."""
  return (jnp.abs(u) < 0.5).astype(u.dtype)


def _varying_axes(x: jax.Array) -> frozenset[str]:
  """Mesh axes over which `x` differs between devices (inside shard_map; empty outside)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", ()))


def _sum_to(grad: jax.Array, param: jax.Array) -> jax.Array:
  """A per-element gradient reduced to a parameter's shape: summed over the leading (batch)
  axes, and, inside shard_map, over the devices the batch is split across but the parameter
  is not (the psum a parameter broadcast into the batch needs)."""
  if grad.shape != param.shape:
    grad = grad.reshape((-1, *param.shape)).sum(axis=0)
  extra = _varying_axes(grad) - _varying_axes(param)
  return jax.lax.psum(grad, tuple(sorted(extra))) if extra else grad


# ---- JumpReLU ---------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
  """z = pre · H(pre − θ), with the straight-through θ-gradient of the JumpReLU paper."""
  return pre * (pre > threshold).astype(pre.dtype)


def _jumprelu_fwd(pre, threshold, bandwidth):
  return jumprelu(pre, threshold, bandwidth), (pre, threshold)


def _jumprelu_bwd(bandwidth, residual, g):
  pre, threshold = residual
  theta = threshold.astype(jnp.float32)
  d_pre = g * (pre > threshold).astype(g.dtype)
  kernel = rectangle((pre.astype(jnp.float32) - theta) / bandwidth)
  d_theta = -(theta / bandwidth) * kernel * g.astype(jnp.float32)
  return d_pre, _sum_to(d_theta, threshold).astype(threshold.dtype)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def heaviside_step(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
  """H(pre − θ) ∈ {0, 1}: the L0 count, differentiable in θ only (straight-through)."""
  return (pre > threshold).astype(pre.dtype)


def _step_fwd(pre, threshold, bandwidth):
  return heaviside_step(pre, threshold, bandwidth), (pre, threshold)


def _step_bwd(bandwidth, residual, g):
  pre, threshold = residual
  theta = threshold.astype(jnp.float32)
  kernel = rectangle((pre.astype(jnp.float32) - theta) / bandwidth)
  d_theta = -(1.0 / bandwidth) * kernel * g.astype(jnp.float32)
  return jnp.zeros_like(pre), _sum_to(d_theta, threshold).astype(threshold.dtype)


heaviside_step.defvjp(_step_fwd, _step_bwd)


# ---- ProLU ------------------------------------------------------------------------------------
def _prolu_gate(m, b):
  return ((m > 0) & (m + b > 0)).astype(m.dtype)


def _prolu(backward, doc: str):
  """ProLU with the gradient `backward(m, g_gate) -> (∂m, per-element ∂b)`."""

  @jax.custom_vjp
  def prolu(m: jax.Array, bias: jax.Array) -> jax.Array:
    return m * _prolu_gate(m, bias)

  def fwd(m, bias):
    return prolu(m, bias), (m, bias)

  def bwd(residual, g):
    m, bias = residual
    d_m, d_bias = backward(m, g * _prolu_gate(m, bias))
    return d_m, _sum_to(d_bias, bias)

  prolu.defvjp(fwd, bwd)
  prolu.__doc__ = doc
  return prolu


prolu_relu = _prolu(
  lambda m, g: (g, g), "ProLU with the ProLU-ReLU gradient: ∂m = ∂b = upstream ⊙ gate."
)
prolu_ste = _prolu(
  lambda m, g: (g * (1 + m), g * m),
  "ProLU with the ProLU-STE gradient: ∂m = g·(1 + m), ∂b = g·m, g = upstream ⊙ gate.",
)
