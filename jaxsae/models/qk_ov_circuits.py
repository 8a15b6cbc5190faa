"""Transformer-circuits analysis of any loaded model (Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits").

Row-vector convention throughout (activations are rows, `x @ W`), so for head h
    W_QK[h] = W_Q[h] W_K[h]^T  (d x d):  attention score = x_q W_QK x_k^T / sqrt(d_head)
    W_OV[h] = W_V[h] W_O[h]    (d x d):  head output     = pattern @ (x W_OV)
The paper writes column vectors (W_QK = W_Q^T W_K, W_OV = W_O W_V); its circuits are the
transposes of these, with identical Frobenius norms, so composition scores agree.

Like the paper, this ignores the nonlinearity of the norms; with `fold_norm=True` the norm's
gain is folded into the matrix that reads its output (its bias, and all linear biases, are
dropped), which is exact up to the per-token normalization scalar. The same holds for the other
norms a family adds: a post-norm's gain is folded into W_O (it scales W_O's output), a QK-norm's
gains into W_Q and W_K (they scale q and k per head dimension); each again ignores its
normalization scalar (per token, and per head for QK-norm). Gains are as applied (offset + w;
pass `config` for models with a norm_scale_offset, e.g. Gemma).

Grouped-query attention: query head h reads KV head h // (H / G), so its W_K and W_V are that
KV head's (`weights.expand_kv_heads`); every circuit here is per query head, (H, ...).

Rotary positions are refused for QK circuits (and Q-/K-composition): RoPE rotates q and k by
their positions, so a query at t meets a key at s through W_Q R(s - t) W_K^T, a different
matrix for every offset; no single W_QK exists, and the R = identity one would describe only a
token attending to itself. OV circuits do not involve positions and are computed as usual.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxsae.errors import JaxsaeError
from jaxsae.models import weights
from jaxsae.models.config import TransformerConfig

_MAX_DENSE_VOCAB = 8192


def _check_qk(config: TransformerConfig | None) -> None:
  if config is not None and config.positions == "rotary":
    raise JaxsaeError(
      "this model has rotary positions: a query at t and a key at s meet through "
      "W_Q R(s - t) W_K^T, a different matrix for every offset, so no single QK circuit exists "
      "(OV circuits and V-composition are still available)"
    )


def head_weights(
  params: Any, layer: int, fold_norm: bool = True, config: TransformerConfig | None = None
) -> dict[str, jnp.ndarray]:
  """Per query head W_Q, W_K, W_V (H, d, d_head) and W_O (H, d_head, d) of one layer (W_K and
  W_V are the head's KV head's under grouped-query attention), with the norm gains folded in
  if asked (module docstring)."""
  w = weights.layer_weights(params, layer, config)
  W_Q, W_K, W_V, W_O = w.W_Q, w.W_K_per_head, w.W_V_per_head, w.W_O
  if fold_norm:
    gain_D = w.attn_norm.gain[:, None, None]
    W_Q, W_K, W_V = W_Q * gain_D, W_K * gain_D, W_V * gain_D
    if w.q_norm is not None:
      W_Q = W_Q * w.q_norm.gain
    if w.k_norm is not None:
      W_K = W_K * w.k_norm.gain
    if w.attn_post_norm is not None:
      W_O = W_O * w.attn_post_norm.gain
  out = {
    name: jnp.transpose(m, (1, 0, 2)) for name, m in (("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V))
  }
  out["W_O"] = jnp.asarray(W_O)
  return out


def qk_matrices(
  params: Any, layer: int, fold_norm: bool = True, config: TransformerConfig | None = None
) -> jnp.ndarray:
  """W_QK (H, d, d) of every query head of `layer`; refused for rotary models (pass `config`)."""
  _check_qk(config)
  w = head_weights(params, layer, fold_norm, config)
  return jnp.einsum("hdk,hek->hde", w["W_Q"], w["W_K"])


def ov_matrices(
  params: Any, layer: int, fold_norm: bool = True, config: TransformerConfig | None = None
) -> jnp.ndarray:
  """W_OV (H, d, d) of every query head of `layer`."""
  w = head_weights(params, layer, fold_norm, config)
  return jnp.einsum("hdk,hke->hde", w["W_V"], w["W_O"])


def embedding(params: Any) -> jnp.ndarray:
  """W_E (V, d)."""
  return params["embed"]["embedding"]


def unembedding(params: Any, config: TransformerConfig, fold_norm: bool = True) -> jnp.ndarray:
  """W_U (d, V), with the final norm's gain folded in if asked."""
  w_DxV = embedding(params).T if config.tied_embeddings else params["unembed"]["kernel"]
  if fold_norm:
    w_DxV = w_DxV * weights.read_norm(params, weights.FINAL_NORM, config).gain[:, None]
  return w_DxV


def _rows(w_VxD: jnp.ndarray, tokens) -> jnp.ndarray:
  if tokens is None:
    if w_VxD.shape[0] > _MAX_DENSE_VOCAB:
      raise JaxsaeError(
        f"a full {w_VxD.shape[0]}x{w_VxD.shape[0]} circuit is too large; pass tokens=[ids...]"
      )
    return w_VxD
  return w_VxD[jnp.asarray(tokens)]


def qk_circuit(params: Any, config: TransformerConfig, layer: int, tokens=None) -> jnp.ndarray:
  """W_E W_QK W_E^T per head, (H, n, n): entry [h, i, j] is how much a query on token i
  attends to a key on token j (direct path, positions and norms ignored)."""
  e_NxD = _rows(embedding(params), tokens)
  return jnp.einsum("nd,hde,me->hnm", e_NxD, qk_matrices(params, layer, config=config), e_NxD)


def ov_circuit(params: Any, config: TransformerConfig, layer: int, tokens=None) -> jnp.ndarray:
  """W_E W_OV W_U per head, (H, n, n): entry [h, i, j] is the logit of token j written by
  head h when it attends to token i."""
  e_NxD = _rows(embedding(params), tokens)
  u_DxN = _rows(unembedding(params, config).T, tokens).T
  return jnp.einsum("nd,hde,em->hnm", e_NxD, ov_matrices(params, layer, config=config), u_DxN)


def direct_path(params: Any, config: TransformerConfig, tokens=None) -> jnp.ndarray:
  """W_E W_U, (n, n): the bigram statistics the embeddings alone implement."""
  e_NxD = _rows(embedding(params), tokens)
  u_DxN = _rows(unembedding(params, config).T, tokens).T
  return e_NxD @ u_DxN


def _frobenius(m: jnp.ndarray) -> jnp.ndarray:
  return jnp.sqrt(jnp.sum(m * m, axis=(-2, -1)))


def composition_scores(params: Any, config: TransformerConfig, kind: str) -> jnp.ndarray:
  """Q-, K- or V-composition of every earlier head into every later head, (L, H, L, H).

  score[l1, h1, l2, h2] = ||M||_F / (||A||_F ||W_OV^{l1,h1}||_F) for l1 < l2, 0 otherwise, with
  (paper's notation) q: M = W_QK^T W_OV, A = W_QK; k: M = W_QK W_OV, A = W_QK;
  v: M = W_OV^{l2,h2} W_OV, A = W_OV^{l2,h2}.
  """
  if kind not in ("q", "k", "v"):
    raise JaxsaeError(f'composition kind "{kind}" is not one of "q", "k", "v"')
  if kind != "v":
    _check_qk(config)
  L = config.n_layers
  ov = jnp.stack([ov_matrices(params, layer, config=config) for layer in range(L)])  # (L, H, d, d)
  reader = ov
  if kind != "v":
    reader = jnp.stack([qk_matrices(params, layer, config=config) for layer in range(L)])
  # Row convention: q-comp reads ov1 @ qk2, k-comp ov1 @ qk2^T, v-comp ov1 @ ov2.
  if kind == "k":
    reader = jnp.swapaxes(reader, -1, -2)
  product = jnp.einsum("ahij,bgjk->ahbgik", ov, reader)
  scores = _frobenius(product) / (_frobenius(ov)[:, :, None, None] * _frobenius(reader)[None, None])
  later = jnp.arange(L)[:, None] < jnp.arange(L)[None, :]
  return jnp.where(later[:, None, :, None], scores, 0.0)
