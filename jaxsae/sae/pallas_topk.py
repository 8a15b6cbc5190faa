"""Optional Pallas kernels for the sparse TopK path, and a selector between them and XLA.

`gather_combine`, `gather_dots` and `scatter_outer` have the signatures and semantics of the XLA
versions in `jaxsae.sae.sparse_topk` (index n, one past the table: the gathers read the last row,
as `take(mode="clip")` does, and callers weight it 0; the scatter drops it), plus keyword-only
`interpret` and block sizes. They are written for the Triton lowering (GPU): one program per
block of tokens and of D looping over the k slots (`gather_dots`: per block of tokens and slot,
looping over D), rows loaded by a vector of dynamic indices, every loaded tile a power of two. `interpret=True` runs them anywhere (CPU tests). They have no
autodiff rules: they are for the custom VJPs' forward and backward bodies. TPU (Mosaic) cannot
lower the vector-indexed row loads, so `available` is GPU only.

The scatter adds with `jax.ref.addupdate`, which the Triton lowering emits as an atomic add and
interpret mode as a scatter-add. (`plgpu.atomic_add` would lower the same, but its interpret rule
rejects a (rows, slice) index and, with an all-array index, keeps only one add per repeated row.)

Block sizes are the largest powers of two up to `block_b` / `block_d` that divide B / D, so no
input is padded (D=768 gives 128; an odd B gives 1, correct but slow).

`kernels("auto")` returns XLA everywhere: nobody has yet measured these kernels beating XLA on a
GPU (experiments/bench/pallas_topk.py does). Switch "auto" to Pallas on GPU only after it has.
Nothing in the training path uses this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxsae.sae import sparse_topk

BLOCK_B = 32
BLOCK_D = 128


def _triton_params(num_warps: int = 4):
  """Compiler params that pick the Triton lowering (not Mosaic GPU) on GPU."""
  from jax.experimental.pallas import triton as pltriton

  return pltriton.CompilerParams(num_warps=num_warps)


def _block(size: int, cap: int) -> int:
  """The largest power of two <= cap dividing size."""
  block = 1
  while block * 2 <= cap and size % (block * 2) == 0:
    block *= 2
  return block


def _call(kernel, grid, in_specs, out_specs, out_shape, interpret, **extra):
  return pl.pallas_call(
    kernel,
    grid=grid,
    in_specs=in_specs,
    out_specs=out_specs,
    out_shape=out_shape,
    interpret=interpret,
    compiler_params=None if interpret else _triton_params(),
    **extra,
  )


def _combine_kernel(idx_ref, w_ref, table_ref, out_ref, *, n: int, k: int):
  def slot(j, acc):
    rows = table_ref[jnp.clip(idx_ref[:, j], 0, n - 1), :].astype(jnp.float32)
    return acc + w_ref[:, j].astype(jnp.float32)[:, None] * rows

  out_ref[...] = jax.lax.fori_loop(0, k, slot, jnp.zeros(out_ref.shape, jnp.float32)).astype(
    out_ref.dtype
  )


@functools.partial(jax.jit, static_argnames=("interpret", "block_b", "block_d"))
def gather_combine(
  table_NxD, idx_BxK, w_BxK, *, interpret: bool = False, block_b=BLOCK_B, block_d=BLOCK_D
):
  """sum_j w[b, j] table[idx[b, j]] for every row b: (B, D) in the table's dtype, accumulated in
  float32 (XLA's accumulates in the table's dtype, so bfloat16 tables differ by its rounding)."""
  (n, d), (b, k) = table_NxD.shape, idx_BxK.shape
  bb, bd = _block(b, block_b), _block(d, block_d)
  return _call(
    functools.partial(_combine_kernel, n=n, k=k),
    grid=(b // bb, d // bd),
    in_specs=[
      pl.BlockSpec((bb, k), lambda i, c: (i, 0)),
      pl.BlockSpec((bb, k), lambda i, c: (i, 0)),
      pl.BlockSpec((n, bd), lambda i, c: (0, c)),
    ],
    out_specs=pl.BlockSpec((bb, bd), lambda i, c: (i, c)),
    out_shape=jax.ShapeDtypeStruct((b, d), table_NxD.dtype),
    interpret=interpret,
  )(idx_BxK, w_BxK, table_NxD)


def _dots_kernel(idx_ref, table_ref, v_ref, out_ref, *, n: int, bd: int):
  rows_i = jnp.clip(idx_ref[...], 0, n - 1)

  def chunk(c, acc):
    cols = pl.ds(pl.multiple_of(c * bd, bd), bd)
    rows = table_ref[rows_i, cols].astype(jnp.float32)
    return acc + jnp.sum(rows * v_ref[:, cols].astype(jnp.float32), axis=1)

  chunks = v_ref.shape[1] // bd
  out_ref[...] = jax.lax.fori_loop(0, chunks, chunk, jnp.zeros(rows_i.shape, jnp.float32))


@functools.partial(jax.jit, static_argnames=("interpret", "block_b", "block_d"))
def gather_dots(
  table_NxD, idx_BxK, v_BxD, *, interpret: bool = False, block_b=BLOCK_B, block_d=BLOCK_D
):
  """table[idx[b, j]] . v[b] for every (b, j): (B, k) float32. A program per (token block, slot)."""
  (n, d), (b, k) = table_NxD.shape, idx_BxK.shape
  bb, bd = _block(b, block_b), _block(d, block_d)
  return _call(
    functools.partial(_dots_kernel, n=n, bd=bd),
    grid=(b // bb, k),
    in_specs=[
      pl.BlockSpec((bb, None), lambda i, j: (i, j)),
      pl.BlockSpec((n, d), lambda i, j: (0, 0)),
      pl.BlockSpec((bb, d), lambda i, j: (i, 0)),
    ],
    out_specs=pl.BlockSpec((bb, None), lambda i, j: (i, j)),
    out_shape=jax.ShapeDtypeStruct((b, k), jnp.float32),
    interpret=interpret,
  )(idx_BxK, table_NxD, v_BxD)


def _scatter_kernel(idx_ref, w_ref, v_ref, zeros_ref, out_ref, *, n: int, k: int):
  del zeros_ref  # aliased to out_ref: the output starts at zero
  v = v_ref[...]

  def slot(j, carry):
    i = idx_ref[:, j]
    add = (w_ref[:, j][:, None] * v).astype(out_ref.dtype)
    # Index n is dropped: its (zeroed) update lands on a real row, as no mask lowers here.
    add = jnp.where((i < n)[:, None], add, jnp.zeros_like(add))
    jax.ref.addupdate(out_ref, (jnp.clip(i, 0, n - 1), slice(None)), add)
    return carry

  jax.lax.fori_loop(0, k, slot, 0)


@functools.partial(
  jax.jit, static_argnums=0, static_argnames=("dtype", "interpret", "block_b", "block_d")
)
def scatter_outer(
  n: int,
  idx_BxK,
  w_BxK,
  v_BxD,
  dtype=jnp.float32,
  *,
  interpret: bool = False,
  block_b=BLOCK_B,
  block_d=BLOCK_D,
):
  """zeros(n, D) with w[b, j] v[b] added at row idx[b, j] (indices >= n dropped), by atomic adds."""
  (b, d), k = v_BxD.shape, idx_BxK.shape[1]
  bb, bd = _block(b, block_b), _block(d, block_d)
  return _call(
    functools.partial(_scatter_kernel, n=n, k=k),
    grid=(b // bb, d // bd),
    in_specs=[
      pl.BlockSpec((bb, k), lambda i, c: (i, 0)),
      pl.BlockSpec((bb, k), lambda i, c: (i, 0)),
      pl.BlockSpec((bb, bd), lambda i, c: (i, c)),
      pl.BlockSpec((n, bd), lambda i, c: (0, c)),
    ],
    out_specs=pl.BlockSpec((n, bd), lambda i, c: (0, c)),
    out_shape=jax.ShapeDtypeStruct((n, d), dtype),
    interpret=interpret,
    input_output_aliases={3: 0},
  )(idx_BxK, w_BxK, v_BxD, jnp.zeros((n, d), dtype))


def available(backend: str | None = None) -> bool:
  """Whether the Pallas kernels compile (not interpret) on `backend` (default: jax's): GPU only."""
  backend = backend or jax.default_backend()
  if backend not in ("gpu", "cuda", "rocm"):
    return False
  try:
    from jax._src.pallas.triton import pallas_call_registration  # noqa: F401
  except ImportError:
    return False
  return True


class Kernels(NamedTuple):
  """The three sparse-path primitives, with `jaxsae.sae.sparse_topk`'s signatures."""

  gather_combine: Callable
  gather_dots: Callable
  scatter_outer: Callable


XLA = Kernels(sparse_topk.gather_combine, sparse_topk.gather_dots, sparse_topk.scatter_outer)


def kernels(name: str = "auto", *, backend: str | None = None, interpret: bool = False) -> Kernels:
  """The "xla" or "pallas" implementations; "auto" is XLA everywhere until Pallas is measured
  faster (see the module docstring). "pallas" without `interpret` needs `available(backend)`."""
  if name in ("xla", "auto"):
    return XLA
  if name != "pallas":
    raise ValueError(f"unknown kernels {name!r}: expected 'xla', 'pallas' or 'auto'")
  if not interpret and not available(backend):
    raise ValueError(
      f"Pallas kernels need a GPU (Triton lowering); backend {backend or jax.default_backend()!r}"
      " has none. Pass interpret=True to run them (slowly) in interpret mode."
    )
  bind = functools.partial(functools.partial, interpret=interpret)
  return Kernels(bind(gather_combine), bind(gather_dots), bind(scatter_outer))
