"""Exact top-k masks of nonnegative scores, found by bisection on their float bit patterns.

`topk_mask(score, k)` marks, along the last axis, the k largest entries with the tie rule of
`lax.top_k` (among equal scores the lower index wins), so it is the mask that `lax.top_k`'s
indices select, bit for bit. For nonnegative float32 the int32 bit pattern orders as the value,
so the k-th largest value per row is built bit by bit from the top: 31 passes of a compare and a
count. Entries above it are kept, and of those equal to it the first `k - count(above)`; the
running count that picks them is only computed when a row has more equal entries than it needs.

On CPU this is several times faster than `lax.top_k` (a sort per row in XLA) for the widths of
activation sparsity and weight projection, and it takes a traced k without a full sort. On
other backends `topk_mask` keeps `lax.top_k` (or a stable sort for a traced k), whose kernels
are fast there; `platform_dependent` picks at lowering time. Arrays under MIN_BISECT_SIZE
entries keep them on every backend. Scores must be >= 0 and not NaN (magnitudes; +inf is fine,
-0.0 ranks below +0.0 as in `lax.top_k`). Integer comparisons also keep subnormal scores apart
where a float comparison that flushes them to zero would not.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

# Below this many entries `lax.top_k` is as fast, and the bisection's loop costs more to compile.
MIN_BISECT_SIZE = 1 << 14


def _count_dtype(width: int):
  return jnp.int16 if width < 2**15 else jnp.int32


def bisect_mask(score: jax.Array, k) -> jax.Array:
  """The top-k mask along the last axis by bit bisection (any backend; `topk_mask` picks it on
  CPU). k: an int, or an int array broadcastable to score.shape[:-1] + (1,), in [0, width]."""
  width = score.shape[-1]
  count_dtype = _count_dtype(width)
  bits = jax.lax.bitcast_convert_type(score.astype(jnp.float32), jnp.int32)
  bits = jnp.where(bits >= 0, bits + 1, 0)  # -0.0 (sign bit only) ranks below +0.0, as in top_k.
  k = jnp.asarray(k, jnp.int32)

  # The passes count down the major axis of the transposed bits (width, rows): each is then an
  # elementwise compare-and-add across rows, which XLA:CPU vectorizes better than short row sums
  # (1.3x faster for rows of 128).
  rows = (*score.shape[:-1], 1)
  bits_by_column = bits.reshape(-1, width).T
  k_by_row = jnp.broadcast_to(k, rows).reshape(-1)

  def set_bit(i, carry):  # Bits 30..0: the largest t with count(bits >= t) >= k, and the count.
    threshold, at_least = carry
    candidate = threshold | jnp.left_shift(jnp.int32(1), 30 - i)
    count = jnp.sum(bits_by_column >= candidate, axis=0, dtype=count_dtype)
    taken = count >= k_by_row
    return jnp.where(taken, candidate, threshold), jnp.where(taken, count, at_least)

  # A loop, not 31 unrolled passes: as fast on CPU, and several times quicker to compile.
  flat_rows = bits_by_column.shape[1]
  start = (jnp.zeros(flat_rows, jnp.int32), jnp.full(flat_rows, width, count_dtype))  # All >= 0.
  threshold, at_least = jax.lax.fori_loop(0, 31, set_bit, start)
  threshold, at_least = threshold.reshape(rows), at_least.reshape(rows)

  def first_needed():  # Rows with more entries at the threshold than they need.
    above, at = bits > threshold, bits == threshold
    need = k - jnp.sum(above, axis=-1, keepdims=True, dtype=jnp.int32)
    return above | (at & (jnp.cumsum(at, axis=-1, dtype=jnp.int32) <= need))

  return jax.lax.cond(jnp.any(at_least > k), first_needed, lambda: bits >= threshold)


def sort_mask(score: jax.Array, k) -> jax.Array:
  """The same mask through `lax.top_k` (a static k: its indices, scattered) or a stable sort (a
  traced k: rebuilt with float compares, which equate -0.0 with +0.0 and may flush subnormals)."""
  if isinstance(k, numbers.Integral):
    if k == 0:
      return jnp.zeros(score.shape, bool)
    _, chosen = jax.lax.top_k(score, int(k))
    return jnp.put_along_axis(jnp.zeros(score.shape, bool), chosen, True, axis=-1, inplace=False)
  width = score.shape[-1]
  index = jax.lax.broadcasted_iota(jnp.int32, score.shape, score.ndim - 1)
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), (*score.shape[:-1], 1))
  neg_sorted, order = jax.lax.sort((-score, index), num_keys=1, is_stable=True)
  position = jnp.clip(k - 1, 0, width - 1)
  threshold = -jnp.take_along_axis(neg_sorted, position, axis=-1)
  last = jnp.where(k > 0, jnp.take_along_axis(order, position, axis=-1), -1)
  return (score > threshold) | ((score == threshold) & (index <= last))


def topk_mask(score: jax.Array, k) -> jax.Array:
  """Bool mask of the k largest entries along the last axis (ties: the lower index), exact.

  score: >= 0 and not NaN, float32 (others are cast). k: a Python int in [0, width], or a
  traced int (scalar or broadcastable to score.shape[:-1] + (1,)) in the same range.
  """
  score = jnp.asarray(score, jnp.float32)
  if score.size < MIN_BISECT_SIZE:
    return sort_mask(score, k)
  return jax.lax.platform_dependent(
    score, cpu=lambda s: bisect_mask(s, k), default=lambda s: sort_mask(s, k)
  )
