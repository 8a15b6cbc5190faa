"""The sparse TopK path: after the top-k, touch only the k chosen latents of each token.

A TopK SAE needs one dense matmul per step, the encoder's forward (Gao et al. 2024, §5.1):

    pre = (x - b_dec) W_enc + b_enc            (B x n, dense: the top-k needs every entry)
    (v, i) = TopK_k(pre);  z = ReLU(v)         (B x k values and latent indices)
    x_hat = sum_j z_j W_dec[i_j] + b_dec       (a gather of k decoder rows per token)

Backward, with g = dL/dv (B x k):
    dW_enc[:, i] += (x - b_dec)^T g            (scatter-add of B k columns, not a B x n matmul)
    d(x - b_dec) = g W_enc[:, i]^T             (a gather of k encoder columns per token)
    db_enc[i] += g
    dW_dec[i] += z^T dL/dx_hat;  dz = (dL/dx_hat) W_dec[i]^T

`select_pre` (the chosen pre-activations) and `combine_rows` (Σ_j z_j W_dec[i_j]) carry these as
custom VJPs, so no n-wide array besides `pre` is built, forward or backward (the parameter
gradients are n-wide by nature). Both accept the index n (one past the table) for "held by another
latent shard": its value is 0, its row is never read and its update is dropped. The gathers and
scatters run as scans over the k slots, so no B x k x d block of gathered rows is built.

Ties in the top-k go to the lower index, as in `lax.top_k`; the ranking is in float32 (bfloat16
top_k is ~100x slower on CPU). Values equal the dense path's within float rounding (tested).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _rows(table_NxD, i_B):
  """table[i] for each i (an index past the end reads the last row; callers weight it 0)."""
  return jnp.take(table_NxD, i_B, axis=0, mode="clip")


def _scan_slots(add, zeros, idx_BxK, w_BxK):
  """Fold `add(acc, (idx[:, j], w[:, j]))` over the slots j. The first slot runs outside the scan,
  so the carry has the inputs' sharding type inside shard_map."""
  slots = (jnp.asarray(idx_BxK).T, jnp.asarray(w_BxK).T)
  first, _ = add(zeros, jax.tree.map(lambda a: a[0], slots))
  return jax.lax.scan(add, first, jax.tree.map(lambda a: a[1:], slots))[0]


def gather_combine(table_NxD, idx_BxK, w_BxK):
  """sum_j w[b, j] table[idx[b, j]] for every row b: (B, D), one B x D gather per slot j."""
  table_NxD = jnp.asarray(table_NxD)

  def add(acc, column):
    i, w = column
    return acc + w[:, None].astype(table_NxD.dtype) * _rows(table_NxD, i), None

  return _scan_slots(
    add, jnp.zeros((idx_BxK.shape[0], table_NxD.shape[1]), table_NxD.dtype), idx_BxK, w_BxK
  )


def gather_dots(table_NxD, idx_BxK, v_BxD):
  """table[idx[b, j]] . v[b] for every (b, j): (B, k), float32 accumulation."""
  table_NxD = jnp.asarray(table_NxD)

  def dot(_, i):
    rows = _rows(table_NxD, i)
    return None, jnp.einsum("bd,bd->b", rows, v_BxD, preferred_element_type=jnp.float32)

  return jax.lax.scan(dot, None, jnp.asarray(idx_BxK).T)[1].T


def scatter_outer(n: int, idx_BxK, w_BxK, v_BxD, dtype=jnp.float32):
  """zeros(n, D) with w[b, j] v[b] added at row idx[b, j] (indices >= n dropped): the gradient of
  a gathered table."""
  v_BxD = jnp.asarray(v_BxD)

  def add(acc, column):
    i, w = column
    return acc.at[i].add((w[:, None] * v_BxD).astype(dtype), mode="drop"), None

  return _scan_slots(add, jnp.zeros((n, v_BxD.shape[1]), dtype), idx_BxK, w_BxK)


def scatter_sum(n: int, idx_BxK, w_BxK, dtype=jnp.float32):
  """zeros(n) with w[b, j] added at idx[b, j] (indices >= n dropped)."""
  return (
    jnp.zeros((n,), dtype).at[idx_BxK.reshape(-1)].add(w_BxK.reshape(-1).astype(dtype), mode="drop")
  )


@jax.custom_vjp
def select_pre(centered_BxD, W_enc_DxN, b_enc_N, idx_BxK, pre_BxN):
  """pre[b, idx[b, j]] for pre = centered W_enc + b_enc, with a gradient that touches only the
  chosen latents. `pre_BxN` must be that product (computed once by the caller, for its top-k);
  it only supplies the values and gets no gradient: the gradient flows through the other three.
  Index n gives 0."""
  n = pre_BxN.shape[-1]
  picked = jnp.take_along_axis(pre_BxN, jnp.minimum(idx_BxK, n - 1), axis=-1)
  return jnp.where(idx_BxK < n, picked, 0).astype(pre_BxN.dtype)


def _select_fwd(centered_BxD, W_enc_DxN, b_enc_N, idx_BxK, pre_BxN):
  values = [a.value for a in (centered_BxD, W_enc_DxN, b_enc_N, idx_BxK, pre_BxN)]
  # The gradient of the centered inputs (a gather of k encoder columns per token) is computed
  # only when they are differentiated: not when they are data, as in training.
  wants_d_centered = jnp.zeros(0) if centered_BxD.perturbed else None
  return select_pre(*values), (values[0], values[1], values[3], wants_d_centered)


def _select_bwd(residuals, g_BxK):
  centered, W_enc_DxN, idx, wants_d_centered = residuals
  if isinstance(g_BxK, jax.custom_derivatives.SymbolicZero):
    return None, None, None, None, None
  n = W_enc_DxN.shape[1]
  g = jnp.where(idx < n, g_BxK, 0).astype(jnp.float32)
  d_centered = None
  if wants_d_centered is not None:
    # Rows of W_enc^T are contiguous: gather rows rather than columns.
    d_centered = gather_combine(W_enc_DxN.T, idx, g).astype(centered.dtype)
  d_W_enc = scatter_outer(n, idx, g, centered).T.astype(W_enc_DxN.dtype)
  d_b_enc = scatter_sum(n, idx, g)
  return d_centered, d_W_enc, d_b_enc, None, None  # pre: no gradient (see the docstring)


select_pre.defvjp(_select_fwd, _select_bwd, symbolic_zeros=True)


@jax.custom_vjp
def combine_rows(z_BxK, idx_BxK, W_dec_NxD):
  """Σ_j z[b, j] W_dec[idx[b, j]]: the decoder on a sparse code (index n contributes nothing)."""
  n = W_dec_NxD.shape[0]
  return gather_combine(W_dec_NxD, idx_BxK, jnp.where(idx_BxK < n, z_BxK, 0))


def _combine_fwd(z_BxK, idx_BxK, W_dec_NxD):
  return combine_rows(z_BxK, idx_BxK, W_dec_NxD), (z_BxK, idx_BxK, W_dec_NxD)


def _combine_bwd(residuals, g_BxD):
  z, idx, W_dec_NxD = residuals
  n = W_dec_NxD.shape[0]
  d_z = jnp.where(idx < n, gather_dots(W_dec_NxD, idx, g_BxD), 0).astype(z.dtype)
  d_W_dec = scatter_outer(n, idx, z.astype(jnp.float32), g_BxD).astype(W_dec_NxD.dtype)
  return d_z, None, d_W_dec


combine_rows.defvjp(_combine_fwd, _combine_bwd)


@functools.partial(jax.jit, static_argnames="k")
def topk_encode(x_BxD, W_enc_DxN, b_enc_N, b_dec_D, k: int):
  """(z_BxK, indices_BxK): ReLU of the k largest pre-activations of each row and their latents.

  b_dec's gradient through the encoder is −(Σ_b g_b) W_encᵀ, one 1×n·n×d product, carried by
  `b_dec_shift` (see `SparseAutoencoder.centered_matmul`)."""
  centered = x_BxD - jax.lax.stop_gradient(b_dec_D)
  pre = jax.lax.stop_gradient(centered @ W_enc_DxN + b_enc_N)
  _, idx = jax.lax.top_k(pre.astype(jnp.float32), k)
  values = select_pre(centered, W_enc_DxN, b_enc_N, idx, pre)
  return jax.nn.relu(values + gather_shift(b_dec_shift(b_dec_D, W_enc_DxN), idx)), idx


def b_dec_shift(b_dec_D, W_enc_DxN):
  """(sg(b_dec) − b_dec) sg(W_enc): n exact zeros whose gradient is b_dec's through the encoder."""
  zero = jax.lax.stop_gradient(b_dec_D) - b_dec_D
  return zero @ jax.lax.stop_gradient(W_enc_DxN)


def gather_shift(shift_N, idx_BxK):
  """shift[idx] (0 at the index n)."""
  n = shift_N.shape[0]
  return jnp.where(idx_BxK < n, jnp.take(shift_N, idx_BxK, mode="clip"), 0)


def sparse_decode(z_BxK, idx_BxK, W_dec_NxD, b_dec_D):
  """x_hat = sum_j z_j W_dec[i_j] + b_dec: a gather of the k chosen decoder rows per token."""
  return combine_rows(z_BxK, idx_BxK, W_dec_NxD) + b_dec_D


def dense_latents(z_BxK, idx_BxK, n: int):
  """The B x n latent matrix of a sparse code (indices >= n dropped)."""
  rows = jnp.arange(z_BxK.shape[0])[:, None]
  return jnp.zeros((z_BxK.shape[0], n), z_BxK.dtype).at[rows, idx_BxK].set(z_BxK, mode="drop")
