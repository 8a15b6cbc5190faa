"""The sparse TopK path (`jaxsae.sae.sparse_topk`): the same numbers and gradients as the dense
TopK SAE computation, with gathers and scatter-adds instead of n-wide matmuls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.sae import sparse_topk as S

B, D, N, K = 48, 16, 256, 8


@pytest.fixture(scope="module")
def params():
  keys = jax.random.split(jax.random.key(0), 5)
  b_enc = jax.random.normal(keys[2], (N,)) * 0.5 - 2.5  # half the top-k values negative: ReLU cuts
  return (
    jax.random.normal(keys[0], (B, D)),
    jax.random.normal(keys[1], (D, N)) / 4,
    b_enc,
    jax.random.normal(keys[3], (N, D)) / 4,
    jax.random.normal(keys[4], (D,)) * 0.1,
  )


def dense_path(x, W_enc, b_enc, W_dec, b_dec):
  pre = (x - b_dec) @ W_enc + b_enc
  values, idx = jax.lax.top_k(pre, K)
  z = jnp.zeros_like(pre).at[jnp.arange(x.shape[0])[:, None], idx].set(jax.nn.relu(values))
  return z @ W_dec + b_dec, z


def sparse_path(x, W_enc, b_enc, W_dec, b_dec):
  z, idx = S.topk_encode(x, W_enc, b_enc, b_dec, K)
  return S.sparse_decode(z, idx, W_dec, b_dec), S.dense_latents(z, idx, N)


@pytest.mark.slow
def test_forward_matches_the_dense_path(params):
  x_hat, z = sparse_path(*params)
  want_x_hat, want_z = dense_path(*params)
  np.testing.assert_allclose(z, want_z, atol=1e-6)
  np.testing.assert_allclose(x_hat, want_x_hat, rtol=1e-5, atol=1e-5)
  assert (np.asarray(z) > 0).sum(1).min() < K  # the ReLU did cut some top-k values


@pytest.mark.slow
def test_gradients_match_the_dense_path(params):
  target = jax.random.normal(jax.random.key(9), (B, D))

  def loss(path):
    def f(*p):
      x_hat, z = path(*p)
      return jnp.sum((x_hat - target) ** 2) + 0.1 * jnp.sum(jnp.abs(z))

    return f

  got = jax.jit(jax.grad(loss(sparse_path), argnums=(0, 1, 2, 3, 4)))(*params)
  want = jax.grad(loss(dense_path), argnums=(0, 1, 2, 3, 4))(*params)
  for name, g, w in zip(("x", "W_enc", "b_enc", "W_dec", "b_dec"), got, want, strict=True):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g, w, atol=1e-5 * max(scale, 1.0), err_msg=name)


def test_gather_and_scatter_primitives_against_numpy():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(N, D)).astype(np.float32)
  idx = rng.integers(0, N, (B, K)).astype(np.int32)
  idx[0, :2] = 7  # repeated latents add up
  w = rng.normal(size=(B, K)).astype(np.float32)
  v = rng.normal(size=(B, D)).astype(np.float32)
  combined = np.einsum("bk,bkd->bd", w, table[idx])
  np.testing.assert_allclose(S.gather_combine(table, idx, w), combined, rtol=1e-5, atol=1e-5)
  dots = np.einsum("bkd,bd->bk", table[idx], v)
  np.testing.assert_allclose(S.gather_dots(table, idx, v), dots, rtol=1e-5, atol=1e-5)
  scattered = np.zeros((N, D), np.float32)
  np.add.at(scattered, idx.reshape(-1), (w[:, :, None] * v[:, None, :]).reshape(-1, D))
  np.testing.assert_allclose(S.scatter_outer(N, idx, w, v), scattered, rtol=1e-5, atol=1e-5)
