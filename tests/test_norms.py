"""jaxsae's norms compute what flax's do, bitwise, and their factor hook makes them linear."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.models import norms


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm"])
def test_the_norms_equal_flaxs_bitwise(kind, dtype):
  x = (jax.random.normal(jax.random.key(0), (3, 5, 16)) * 3 + 1).astype(dtype)
  if kind == "rmsnorm":
    theirs = nn.RMSNorm(epsilon=1e-5, dtype=dtype)
  else:
    theirs = nn.LayerNorm(epsilon=1e-5, dtype=dtype)
  ours = norms.Norm(kind, 1e-5, dtype)
  params = theirs.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  mine = nn.meta.unbox(ours.init(jax.random.key(1), x))  # Logical axes: the values alone.
  assert jax.tree.structure(mine) == jax.tree.structure(params)
  got, want = ours.apply(params, x), theirs.apply(params, x)
  assert got.dtype == want.dtype
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("kind,offset", [("rmsnorm", 0.0), ("rmsnorm", 1.0), ("layernorm", 0.0)])
def test_a_held_factor_makes_the_norm_linear_with_the_same_value(kind, offset):
  """With r = 1/σ stopped, y(x) is linear: its Jacobian is diag(r·g) (RMSNorm), r·g·(I − 1/d)
  (LayerNorm), at the same output."""
  x = jax.random.normal(jax.random.key(0), (2, 16)) * 2
  norm = norms.Norm(kind, 1e-6, jnp.float32, offset=offset)
  params = jax.tree.map(lambda p: p + 0.5, nn.meta.unbox(norm.init(jax.random.key(1), x)))
  free = norm.apply(params, x)
  held = norm.apply(params, x, jax.lax.stop_gradient)
  np.testing.assert_array_equal(free, held)
  jac = jax.jacobian(lambda v: norm.apply(params, v[None], jax.lax.stop_gradient)[0])(x[0])
  xn = np.asarray(x[0], np.float64)
  mean = xn.mean() if kind == "layernorm" else 0.0
  r = 1 / np.sqrt(((xn - mean) ** 2).mean() + 1e-6)
  gain = np.asarray(params["params"]["scale"], np.float64) + offset
  centering = np.eye(16) - (1 / 16 if kind == "layernorm" else 0)
  np.testing.assert_allclose(jac, (r * gain)[:, None] * centering, rtol=1e-4, atol=1e-6)
  assert not np.allclose(
    jax.jacobian(lambda v: norm.apply(params, v[None])[0])(x[0]), jac, atol=1e-3
  )
