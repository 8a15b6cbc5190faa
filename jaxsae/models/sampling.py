"""Autoregressive sampling from a transformer, with optional hook edits (steering).

No KV cache: each new token reruns the model over a window of at most `max_len` tokens. For the
small models this library trains that costs little, and it lets every hook edit act on every
position exactly as in a plain forward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.transformer import Transformer, run


def sample_logits(
  logits_BxV: jax.Array, rng: jax.Array, temperature: float, top_k: int
) -> jax.Array:
  """Greedy when temperature == 0; else softmax(logits / temperature) over the top_k (0: all)."""
  if temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = logits_BxV.astype(jnp.float32) / temperature
  if top_k:
    kth_Bx1 = lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  return jax.random.categorical(rng, logits_BxV, axis=-1).astype(jnp.int32)


def make_sampler(
  model: Transformer,
  max_new_tokens: int,
  *,
  temperature: float = 1.0,
  top_k: int = 0,
  edits: Mapping[str, hooks_lib.EditFn] | None = None,
):
  """A jitted (params, prompt_BxP, rng) -> tokens_Bx(P+max_new_tokens)."""
  if max_new_tokens < 1:
    raise JaxsaeError(f"max_new_tokens={max_new_tokens} must be at least 1")
  if top_k < 0 or top_k > model.config.vocab_size:
    raise JaxsaeError(f"top_k={top_k} must be in [0, vocab_size={model.config.vocab_size}]")
  forward = functools.partial(run, model, edits=edits)

  @jax.jit
  def sample(params, prompt_BxP: jax.Array, rng: jax.Array) -> jax.Array:
    B, P = prompt_BxP.shape
    if P < 1:
      raise JaxsaeError("the prompt must hold at least one token (the separator)")
    total = P + max_new_tokens
    window = min(total, model.config.max_len)
    tokens = jnp.zeros((B, total), jnp.int32).at[:, :P].set(prompt_BxP.astype(jnp.int32))

    def step(i, tokens):
      pos = P + i  # Position of the token being sampled.
      start = jnp.clip(pos - window, 0, total - window)
      logits = forward(params, lax.dynamic_slice(tokens, (0, start), (B, window)))[0]
      last_BxV = lax.dynamic_index_in_dim(logits, pos - 1 - start, axis=1, keepdims=False)
      new_B = sample_logits(last_BxV, jax.random.fold_in(rng, i), temperature, top_k)
      return lax.dynamic_update_slice(tokens, new_B[:, None], (0, pos))

    return lax.fori_loop(0, max_new_tokens, step, tokens)

  return sample
