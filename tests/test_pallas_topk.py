"""The Pallas sparse-TopK kernels, in interpret mode on CPU, against XLA and numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.sae import pallas_topk, sparse_topk

N, K = 64, 4
BLOCKS = dict(interpret=True, block_b=8, block_d=16)  # several programs along B and D


def _inputs(b=16, d=32, seed=0):
  """Random table, v, weights and indices with a repeated index in a row, a row of one index
  repeated k times, and the out-of-range index n."""
  r = np.random.default_rng(seed)
  idx = r.integers(0, N, size=(b, K))
  idx[0, 1] = idx[0, 0]
  idx[1, :] = 5
  idx[2, 3] = N
  idx[3, :2] = N
  table = r.normal(size=(N, d)).astype(np.float32)
  w = r.normal(size=(b, K)).astype(np.float32)
  v = r.normal(size=(b, d)).astype(np.float32)
  return table, idx.astype(np.int32), w, v


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b,d", [(16, 32), (16, 64), (12, 32)])
@pytest.mark.slow
def test_gather_combine(b, d):
  table, idx, w, _ = _inputs(b, d)
  out = pallas_topk.gather_combine(jnp.asarray(table), idx, w, **BLOCKS)
  rows = table[np.minimum(idx, N - 1)]  # index n reads the last row, as XLA's clip does
  _close(out, np.einsum("bk,bkd->bd", w, rows))
  _close(out, sparse_topk.gather_combine(table, idx, w))
  # With index n weighted 0 (how callers use it) it contributes nothing.
  w0 = np.where(idx < N, w, 0)
  skip = np.einsum("bk,bkd->bd", w0, table[np.minimum(idx, N - 1)] * (idx < N)[..., None])
  _close(pallas_topk.gather_combine(jnp.asarray(table), idx, w0, **BLOCKS), skip)


@pytest.mark.parametrize("d", [32, 64])
def test_gather_dots(d):
  table, idx, _, v = _inputs(16, d, seed=1)
  out = pallas_topk.gather_dots(jnp.asarray(table), idx, v, **BLOCKS)
  assert out.shape == (16, K) and out.dtype == jnp.float32
  _close(out, np.einsum("bkd,bd->bk", table[np.minimum(idx, N - 1)], v))
  _close(out, sparse_topk.gather_dots(table, idx, v))


@pytest.mark.parametrize("d", [32, 64])
def test_scatter_outer(d):
  _, idx, w, v = _inputs(16, d, seed=2)
  out = pallas_topk.scatter_outer(N, idx, w, v, **BLOCKS)
  expected = np.zeros((N, d), np.float32)
  for b, j in np.ndindex(idx.shape):
    if idx[b, j] < N:  # index n is dropped
      expected[idx[b, j]] += w[b, j] * v[b]
  assert out.shape == (N, d) and out.dtype == jnp.float32
  _close(out, expected)
  _close(out, sparse_topk.scatter_outer(N, idx, w, v))


def test_default_blocks_single_program():
  """The default block sizes (larger than these shapes) cover B and D in one program each."""
  table, idx, w, v = _inputs(16, 32, seed=3)
  _close(
    pallas_topk.gather_combine(table, idx, w, interpret=True),
    np.asarray(sparse_topk.gather_combine(table, idx, w)),
  )
  _close(
    pallas_topk.scatter_outer(N, idx, w, v, interpret=True),
    np.asarray(sparse_topk.scatter_outer(N, idx, w, v)),
  )


def test_selector_and_availability():
  assert not pallas_topk.available("cpu") and not pallas_topk.available("tpu")
  assert pallas_topk.kernels("xla") is pallas_topk.XLA
  assert pallas_topk.kernels("auto") is pallas_topk.XLA  # unmeasured: XLA everywhere
  assert pallas_topk.kernels("auto", backend="gpu") is pallas_topk.XLA
  with pytest.raises(ValueError, match="need a GPU"):
    pallas_topk.kernels("pallas", backend="cpu")
  with pytest.raises(ValueError, match="unknown kernels"):
    pallas_topk.kernels("triton")
  fns = pallas_topk.kernels("pallas", backend="cpu", interpret=True)
  table, idx, w, v = _inputs(16, 32, seed=4)
  _close(fns.gather_dots(table, idx, v), sparse_topk.gather_dots(table, idx, v))
  _close(fns.scatter_outer(N, idx, w, v), sparse_topk.scatter_outer(N, idx, w, v))
