"""The transformer's norms, with their normalization factor exposed as a hook site.

    RMSNorm:        y = x · r · g            r = 1/√(mean(x²) + ε)
    Gemma's:        y = x · r · (1 + w)      (the gain stored as an offset from 1)
    LayerNorm:      y = (x − x̄) · r · g + b  r = 1/√(var(x) + ε)

r (B, T, 1) passes through `factor_hook` before it is used, so an edit can replace it, and in
particular hold it constant: `jax.lax.stop_gradient` there makes the norm linear in x, as an
attribution graph's local replacement model needs (Circuit Tracing §3: "freeze the
normalization denominators"). Written by hand because flax's norms compute r internally; the
arithmetic is theirs, operation for operation (statistics in float32, the fast variance
E[x²] − E[x]², r·g before the product), so parameters and outputs are those of nn.RMSNorm and
nn.LayerNorm (tests/test_norms.py checks bitwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

KINDS = ("rmsnorm", "layernorm")


class Norm(nn.Module):
  """kind "rmsnorm" or "layernorm"; `offset` > 0: Gemma's gain (offset + w), w initialized to 0."""

  kind: str
  epsilon: float
  dtype: Any
  axis_name: str = "embed"
  offset: float = 0.0
  use_bias: bool = True  # LayerNorm only.

  @nn.compact
  def __call__(self, x: jnp.ndarray, factor_hook: Callable | None = None) -> jnp.ndarray:
    d = x.shape[-1]
    if self.offset:
      return self._offset_rmsnorm(x, factor_hook)
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if self.kind == "layernorm":
      mean = jnp.mean(x32, axis=-1, keepdims=True)
      var = jnp.maximum(0.0, jnp.mean(jnp.square(x32), axis=-1, keepdims=True) - jnp.square(mean))
    else:
      mean, var = 0.0, jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    factor = _hooked(jax.lax.rsqrt(var + self.epsilon), factor_hook)
    ones = nn.with_logical_partitioning(nn.initializers.ones_init(), (self.axis_name,))
    scale = self.param("scale", ones, (d,), jnp.float32)
    y = (x - mean) * (factor * scale)
    if self.kind == "layernorm" and self.use_bias:
      zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.axis_name,))
      y = y + self.param("bias", zeros, (d,), jnp.float32)
    return jnp.asarray(y, self.dtype)

  def _offset_rmsnorm(self, x, factor_hook):
    init = nn.initializers.zeros_init() if self.offset == 1 else nn.initializers.ones_init()
    w = self.param(
      "scale", nn.with_logical_partitioning(init, (self.axis_name,)), (x.shape[-1],), jnp.float32
    )
    x32 = x.astype(jnp.float32)
    factor = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    y = x32 * _hooked(factor, factor_hook)
    return (y * (self.offset + w)).astype(self.dtype)


def _hooked(factor, hook):
  return factor if hook is None else hook(factor)
