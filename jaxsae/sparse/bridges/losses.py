"""The bridge loss (Gao et al. 2025, §bridges; the formula is in `jaxsae.sparse.bridges`): CE and
KL of the two models, NMSE of each encoder and decoder, and the KL of every hybrid pass, as a
pure function of the parameters (`losses`), jitted (`bridge_losses`) and averaged over held-out
windows (`evaluate_bridges`)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.lm.loss import token_losses
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, run
from jaxsae.sparse.bridges.weights import Bridges, check_pair, decode, encode
from jaxsae.text import pipeline

TERMS = ("nmse_enc", "nmse_dec", "kl_hybrid_enc", "kl_hybrid_dec")
"""The per-site loss terms; `bridge_losses` reports each as "<term>/<site>" and summed as "<term>"."""
_NMSE_EPS = 1e-12


def nmse(x_hat: jax.Array, x: jax.Array) -> jax.Array:
  """Σ ‖x̂ − x‖² / Σ ‖x‖², both sums over every token (row) of the batch."""
  x_hat, x = x_hat.astype(jnp.float32), x.astype(jnp.float32)
  return jnp.sum(jnp.square(x_hat - x)) / jnp.maximum(jnp.sum(jnp.square(x)), _NMSE_EPS)


def kl_from(logp_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), mean over tokens; p given as log-probabilities."""
  logp_q = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(logp_p) * (logp_p - logp_q), axis=-1))


def _replace_with(value: jax.Array):
  return lambda x: value


def losses(
  bridges: Bridges,
  dense_params: Any,
  sparse_params: Any,
  tokens_BxT1: jax.Array,
  *,
  dense_model: Transformer,
  sparse_model: Transformer,
) -> dict[str, jax.Array]:
  """Every term of the bridge loss (module docstring) on windows of T+1 tokens: a pure function
  of the parameters (inputs are [:, :-1], CE targets [:, 1:]). See `bridge_losses`."""
  inputs, targets = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]
  sites = bridges.sites
  dense_logits, h_d = run(dense_model, dense_params, inputs, capture=sites)
  sparse_logits, h_s = run(sparse_model, sparse_params, inputs, capture=sites)
  dense_logp = jax.lax.stop_gradient(jax.nn.log_softmax(dense_logits.astype(jnp.float32), -1))
  h_d = jax.lax.stop_gradient(h_d)  # The dense model is frozen (also in the paper).
  out = {
    "ce_sparse": jnp.mean(token_losses(sparse_logits, targets)),
    "kl_dense_sparse": kl_from(dense_logp, sparse_logits),
  }
  for site in sites:
    enc = encode(bridges, site, h_d[site])
    dec = decode(bridges, site, h_s[site])
    out[f"nmse_enc/{site}"] = nmse(enc, jax.lax.stop_gradient(h_s[site]))
    out[f"nmse_dec/{site}"] = nmse(dec, h_d[site])
    # Continue each model from site i with the other's residual bridged in: the edit replaces
    # the activation there, and XLA drops the now-unused computation before it.
    hybrid_sparse, _ = run(sparse_model, sparse_params, inputs, edits={site: _replace_with(enc)})
    out[f"kl_hybrid_enc/{site}"] = kl_from(dense_logp, hybrid_sparse)
    hybrid_dense, _ = run(dense_model, dense_params, inputs, edits={site: _replace_with(dec)})
    out[f"kl_hybrid_dec/{site}"] = kl_from(dense_logp, hybrid_dense)
  for term in TERMS:
    out[term] = sum(out[f"{term}/{site}"] for site in sites)
  out["total"] = out["ce_sparse"] + out["kl_dense_sparse"] + sum(out[t] for t in TERMS)
  return out


def _check_tokens(tokens, dense_lm, sparse_lm) -> jax.Array:
  tokens = jnp.asarray(tokens, jnp.int32)
  max_len = min(dense_lm.config.max_len, sparse_lm.config.max_len)
  if tokens.ndim != 2 or not 2 <= tokens.shape[1] <= max_len + 1:
    raise JaxsaeError(
      f"tokens of shape {tuple(tokens.shape)}: pass windows (batch, T+1) with 2 <= T+1 <= "
      f"{max_len + 1} (inputs are [:, :-1], targets [:, 1:]; see jaxsae.text.pipeline)"
    )
  return tokens


@functools.lru_cache(maxsize=8)
def _jitted_losses(dense_config: TransformerConfig, sparse_config: TransformerConfig):
  return jax.jit(
    functools.partial(
      losses, dense_model=Transformer(dense_config), sparse_model=Transformer(sparse_config)
    )
  )


def bridge_losses(
  bridges: Bridges, dense_lm, sparse_lm, sparse_params: Any, tokens_BxT1
) -> dict[str, jax.Array]:
  """Every term of the bridge loss on windows `tokens_BxT1` (batch, T+1), jitted.

  Keys: ce_sparse, kl_dense_sparse, "<term>/<site>" for each term of TERMS (nmse_enc, nmse_dec,
  kl_hybrid_enc, kl_hybrid_dec) and site, "<term>" (the sum over sites) and total (the sum of
  everything, each coefficient 1). `sparse_params` None means `sparse_lm.params`.
  """
  check_pair(bridges, dense_lm, sparse_lm)
  tokens = _check_tokens(tokens_BxT1, dense_lm, sparse_lm)
  sparse_params = sparse_lm.params if sparse_params is None else sparse_params
  fn = _jitted_losses(dense_lm.config, sparse_lm.config)
  return fn(bridges, dense_lm.params, sparse_params, tokens)


def _windows_array(windows, n: int | None = None) -> np.ndarray:
  if isinstance(windows, pipeline.PackedWindows):
    count = len(windows) if n is None else min(n, len(windows))
    return np.stack([windows[i] for i in range(count)])
  arr = np.asarray(windows, np.int32)
  return arr if n is None else arr[:n]


def evaluate_bridges(
  bridges: Bridges,
  dense_lm,
  sparse_lm,
  windows,
  batch_size: int = 8,
  max_windows: int | None = None,
) -> dict[str, float]:
  """Each term of `bridge_losses`, averaged over the full batches of the first `max_windows`
  windows (a `PackedWindows` or an (N, T+1) array); the last partial batch is dropped."""
  arr = _windows_array(windows, max_windows)
  n_batches = len(arr) // batch_size
  if n_batches < 1:
    raise JaxsaeError(
      f"{len(arr)} windows make no full batch of {batch_size}; pass more windows or a smaller "
      "batch size"
    )
  totals: dict[str, float] = {}
  for b in range(n_batches):
    result = jax.device_get(
      bridge_losses(bridges, dense_lm, sparse_lm, None, arr[b * batch_size : (b + 1) * batch_size])
    )
    for key, value in result.items():
      totals[key] = totals.get(key, 0.0) + float(value) / n_batches
  return totals
