"""jaxsae.topk_mask: the bit-bisection top-k mask is exactly the mask of lax.top_k's indices
(ties to the lower index), on random data, on data full of ties, and at the edges of k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.topk_mask import bisect_mask, sort_mask, topk_mask


def _lax_top_k_mask(score, k):
  """The reference: put True at the indices lax.top_k returns."""
  score = jnp.asarray(score, jnp.float32)
  if k == 0:
    return np.zeros(score.shape, bool)
  _, index = jax.lax.top_k(score, k)
  return np.asarray(
    jnp.put_along_axis(jnp.zeros(score.shape, bool), index, True, axis=-1, inplace=False)
  )


def _cases():
  rng = np.random.default_rng(0)
  normal = np.abs(rng.standard_normal((6, 129))).astype(np.float32)
  ties = rng.integers(0, 4, (6, 129)).astype(np.float32)  # Few distinct values: many ties.
  special = np.abs(rng.standard_normal((3, 40))).astype(np.float32)
  special[:, ::3] = 0.0
  special[:, 1::7] = -0.0
  special[0, 5:9] = np.inf
  special[1, :] = 1.0  # All equal.
  tiny = np.array([[np.float32(1e-45), 0.0, np.float32(2e-45), np.float32(1e-45)]], np.float32)
  return {"normal": normal, "ties": ties, "special": special, "subnormal": tiny}


@pytest.mark.parametrize("name", ["normal", "ties", "special", "subnormal"])
@pytest.mark.slow
def test_bisect_mask_equals_lax_top_k_for_every_k(name):
  score = _cases()[name]
  width = score.shape[-1]
  ks = sorted({0, 1, 2, width // 4, width // 2, width - 1, width})
  bisect = jax.jit(bisect_mask, static_argnums=1)
  for k in ks:
    expected = _lax_top_k_mask(score, k)
    np.testing.assert_array_equal(np.asarray(bisect(score, k)), expected, err_msg=f"k={k}")
    np.testing.assert_array_equal(np.asarray(topk_mask(score, k)), expected, err_msg=f"k={k}")
    np.testing.assert_array_equal(np.asarray(sort_mask(score, k)), expected, err_msg=f"k={k}")
    assert (np.asarray(bisect(score, k)).sum(-1) == k).all()


@pytest.mark.slow
def test_traced_k_scalar_and_per_row():
  score = _cases()["ties"]
  per_row = np.array([0, 1, 5, 64, 128, 129], np.int32)[:, None]
  expected = np.concatenate(
    [_lax_top_k_mask(score[i : i + 1], int(k)) for i, k in enumerate(per_row[:, 0])]
  )
  for fn in (bisect_mask, sort_mask, topk_mask):
    np.testing.assert_array_equal(np.asarray(jax.jit(fn)(score, per_row)), expected)
    np.testing.assert_array_equal(
      np.asarray(jax.jit(fn)(score, jnp.int32(17))), _lax_top_k_mask(score, 17)
    )


@pytest.mark.slow
def test_large_arrays_take_the_bisection_and_stay_exact():
  rng = np.random.default_rng(1)
  wide = np.abs(rng.standard_normal((1, 40000))).astype(np.float32)  # int32 counts.
  wide[0, 100:200] = wide[0, 50]  # Ties at an arbitrary value.
  many = rng.integers(0, 6, (256, 129)).astype(np.float32)  # 33k entries, ties in every row.
  assert "branches_platforms" in str(jax.make_jaxpr(lambda s: topk_mask(s, 3))(many))
  assert "branches_platforms" not in str(jax.make_jaxpr(lambda s: topk_mask(s, 3))(many[:8]))
  for score, ks in ((wide, (1, 51, 4000)), (many, (1, 30, 100))):
    for k in ks:
      expected = _lax_top_k_mask(score, k)
      np.testing.assert_array_equal(np.asarray(topk_mask(score, k)), expected)
      np.testing.assert_array_equal(np.asarray(jax.jit(topk_mask)(score, k)), expected)
  batched = np.abs(rng.standard_normal((2, 3, 4, 33))).astype(np.float32).round(1)
  np.testing.assert_array_equal(np.asarray(bisect_mask(batched, 8)), _lax_top_k_mask(batched, 8))
