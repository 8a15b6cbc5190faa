"""Forward values and custom gradients of the SAE nonlinearities, against hand computation."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.sae import nonlinearities as nl

PRE = jnp.array([[0.30, 0.515, -0.2, 0.49], [0.51, 0.1, 0.75, 0.0]], jnp.float32)
THETA = jnp.array([0.5, 0.5, 0.5, 0.5], jnp.float32)
EPS = 0.04  # Rectangle kernel K((pre − θ)/ε) is 1 where |pre − θ| < 0.02.


def test_jumprelu_forward_keeps_values_above_the_threshold():
  z = nl.jumprelu(PRE, THETA, EPS)
  np.testing.assert_allclose(z, [[0, 0.515, 0, 0], [0.51, 0, 0.75, 0]], rtol=1e-6)


def test_jumprelu_gradients_are_the_papers_pseudo_derivatives():
  g = jnp.arange(1.0, 9.0).reshape(2, 4)  # Distinct upstream gradients.
  _, vjp = jax.vjp(lambda p, t: nl.jumprelu(p, t, EPS), PRE, THETA)
  d_pre, d_theta = vjp(g)
  # ∂z/∂pre = H(pre − θ)·g
  np.testing.assert_allclose(d_pre, [[0, 2, 0, 0], [5, 0, 7, 0]])
  # ∂z/∂θ = −(θ/ε)·K((pre−θ)/ε)·g summed over the batch: in-window entries are
  # (0,1) pre=.515, (0,3) pre=.49, (1,0) pre=.51 (0.75 and 0.30 are outside).
  expected = -(0.5 / EPS) * np.array([5.0, 2.0, 0.0, 4.0])
  np.testing.assert_allclose(d_theta, expected, rtol=1e-5)


def test_heaviside_step_trains_only_the_threshold():
  g = jnp.ones_like(PRE)
  h, vjp = jax.vjp(lambda p, t: nl.heaviside_step(p, t, EPS), PRE, THETA)
  np.testing.assert_array_equal(h, [[0, 1, 0, 0], [1, 0, 1, 0]])
  d_pre, d_theta = vjp(g)
  np.testing.assert_array_equal(d_pre, np.zeros_like(PRE))
  np.testing.assert_allclose(d_theta, -(1 / EPS) * np.array([1.0, 1.0, 0.0, 1.0]), rtol=1e-5)


def test_threshold_gradient_survives_in_float32_when_pre_is_bfloat16():
  """Known mistake 5: a bf16 θ stops learning; θ stays float32 and gets float32 gradients."""
  pre = PRE.astype(jnp.bfloat16)
  _, vjp = jax.vjp(lambda t: nl.heaviside_step(pre, t, EPS), THETA)
  (d_theta,) = vjp(jnp.ones_like(pre))
  assert d_theta.dtype == jnp.float32
  assert float(jnp.abs(d_theta).sum()) > 0


M = jnp.array([[0.5, -0.3, 0.2], [1.0, 0.4, -0.1]], jnp.float32)
B = jnp.array([-0.7, 0.1, 0.3], jnp.float32)
# gate = 1[m > 0]·1[m + b > 0]: row 0 → [0, 0, 1]; row 1 → [1, 1, 0].
GATE = np.array([[0, 0, 1], [1, 1, 0]], np.float32)


def test_prolu_forward():
  for fn in (nl.prolu_relu, nl.prolu_ste):
    np.testing.assert_allclose(fn(M, B), np.asarray(M) * GATE)


def test_prolu_relu_gradients():
  g = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  _, vjp = jax.vjp(nl.prolu_relu, M, B)
  d_m, d_b = vjp(g)
  np.testing.assert_allclose(d_m, np.asarray(g) * GATE)  # ∂m = g ⊙ gate
  np.testing.assert_allclose(d_b, (np.asarray(g) * GATE).sum(0))  # ∂b = g ⊙ gate


def test_prolu_ste_gradients():
  g = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  _, vjp = jax.vjp(nl.prolu_ste, M, B)
  d_m, d_b = vjp(g)
  gg = np.asarray(g) * GATE
  np.testing.assert_allclose(d_m, gg * (1 + np.asarray(M)), rtol=1e-6)  # ∂m = g(1 + m)
  np.testing.assert_allclose(d_b, (gg * np.asarray(M)).sum(0), rtol=1e-6)  # ∂b = g·m
