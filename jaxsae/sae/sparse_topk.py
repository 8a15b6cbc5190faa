"""The sparse TopK path: after the top-k, touch only the k chosen latents of each token.

A TopK SAE needs one dense matmul per step, the encoder's forward (Gao et al. 2024, §5.1):

    pre = (x - b_dec) W_enc + b_enc            (B x n, dense: the top-k needs every entry)
    (v, i) = TopK_k(pre);  z = ReLU(v)         (B x k values and latent indices)
    x_hat = sum_j z_j W_dec[i_j] + b_dec       (a gather of k decoder rows per token)

Backward, with g = dL/dz (B x k, zero where ReLU cut):
    dW_enc[:, i] += (x - b_dec)^T g            (scatter-add of B k columns, not a B x n matmul)
    dx = g W_enc[:, i]^T                       (a gather of k encoder columns per token)
    db_enc[i] += g;  db_dec = -sum dx (and + sum dL/dx_hat from the decoder)
    dW_dec[i] += z^T dL/dx_hat;  dz = (dL/dx_hat) W_dec[i]^T

`topk_encode` and `sparse_decode` carry these as custom VJPs, so no n-wide array besides `pre`
is ever built, forward or backward (the parameter gradients are n-wide by nature). Ties in the
top-k go to the lower index, as in `lax.top_k`; the ranking is in float32 (bfloat16 top_k is
~100x slower on CPU). Values equal the dense path's within float rounding (tested).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def gather_combine(table_NxD, idx_BxK, w_BxK):
  """sum_j w[b, j] table[idx[b, j]] for every row b: (B, D), one B x D gather per j (a scan,
  so the B x k x D block of gathered rows is never built)."""

  table_NxD = jnp.asarray(table_NxD)

  def add(acc, column):
    i, w = column
    return acc + w[:, None] * table_NxD[i], None

  init = jnp.zeros((idx_BxK.shape[0], table_NxD.shape[1]), table_NxD.dtype)
  return jax.lax.scan(add, init, (jnp.asarray(idx_BxK).T, jnp.asarray(w_BxK).T))[0]


def gather_dots(table_NxD, idx_BxK, v_BxD):
  """table[idx[b, j]] . v[b] for every (b, j): (B, k)."""

  table_NxD = jnp.asarray(table_NxD)

  def dot(_, i):
    return None, jnp.einsum("bd,bd->b", table_NxD[i], v_BxD)

  return jax.lax.scan(dot, None, jnp.asarray(idx_BxK).T)[1].T


def scatter_outer(n: int, idx_BxK, w_BxK, v_BxD):
  """zeros(n, D) with w[b, j] v[b] added at row idx[b, j]: the gradient of a gathered table."""

  v_BxD = jnp.asarray(v_BxD)

  def add(acc, column):
    i, w = column
    return acc.at[i].add(w[:, None] * v_BxD), None

  init = jnp.zeros((n, v_BxD.shape[1]), v_BxD.dtype)
  return jax.lax.scan(add, init, (jnp.asarray(idx_BxK).T, jnp.asarray(w_BxK).T))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def topk_encode(x_BxD, W_enc_DxN, b_enc_N, b_dec_D, k: int):
  """(z_BxK, indices_BxK): ReLU of the k largest pre-activations of each row and their latents."""
  z, idx, _ = _encode_forward(x_BxD, W_enc_DxN, b_enc_N, b_dec_D, k)
  return z, idx


def _encode_forward(x_BxD, W_enc_DxN, b_enc_N, b_dec_D, k):
  centered = x_BxD - b_dec_D
  pre = centered @ W_enc_DxN + b_enc_N
  values, idx = jax.lax.top_k(pre.astype(jnp.float32), k)
  return jax.nn.relu(values).astype(pre.dtype), idx, centered


def _encode_fwd(x_BxD, W_enc_DxN, b_enc_N, b_dec_D, k):
  z, idx, centered = _encode_forward(x_BxD, W_enc_DxN, b_enc_N, b_dec_D, k)
  return (z, idx), (centered, W_enc_DxN, idx, z > 0)


def _encode_bwd(k, residuals, cotangents):
  centered, W_enc_DxN, idx, live = residuals
  g_z, _ = cotangents  # indices are integers: no cotangent flows through them
  g = jnp.where(live, g_z, 0).astype(centered.dtype)  # through the ReLU
  n = W_enc_DxN.shape[1]
  # Rows of W_enc^T are contiguous: gather and scatter-add rows rather than columns.
  d_centered = gather_combine(W_enc_DxN.T, idx, g)
  d_W_enc = scatter_outer(n, idx, g, centered).T
  d_b_enc = jnp.zeros((n,), g.dtype).at[idx.reshape(-1)].add(g.reshape(-1))
  return d_centered, d_W_enc.astype(W_enc_DxN.dtype), d_b_enc, -d_centered.sum(0)


topk_encode.defvjp(_encode_fwd, _encode_bwd)


@jax.custom_vjp
def sparse_decode(z_BxK, idx_BxK, W_dec_NxD, b_dec_D):
  """x_hat = sum_j z_j W_dec[i_j] + b_dec: a gather of the k chosen decoder rows per token."""
  return gather_combine(W_dec_NxD, idx_BxK, z_BxK) + b_dec_D


def _decode_fwd(z_BxK, idx_BxK, W_dec_NxD, b_dec_D):
  return sparse_decode(z_BxK, idx_BxK, W_dec_NxD, b_dec_D), (z_BxK, idx_BxK, W_dec_NxD)


def _decode_bwd(residuals, g_BxD):
  z, idx, W_dec_NxD = residuals
  d_z = gather_dots(W_dec_NxD, idx, g_BxD)
  d_W_dec = scatter_outer(W_dec_NxD.shape[0], idx, z, g_BxD)
  return d_z, None, d_W_dec, g_BxD.sum(0)


sparse_decode.defvjp(_decode_fwd, _decode_bwd)


def dense_latents(z_BxK, idx_BxK, n: int):
  """The B x n latent matrix of a sparse code (for statistics and the dense path)."""
  rows = jnp.arange(z_BxK.shape[0])[:, None]
  return jnp.zeros((z_BxK.shape[0], n), z_BxK.dtype).at[rows, idx_BxK].set(z_BxK)
