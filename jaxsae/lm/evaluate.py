"""Evaluate a language model on a split: mean loss per token and bits per byte."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxsae import sharding
from jaxsae.lm import loss as loss_lib
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model
from jaxsae.text.pipeline import PackedWindows, eval_batches


@dataclasses.dataclass(frozen=True)
class LMEval:
  loss: float  # nats per token
  bits_per_byte: float
  tokens: int
  bytes: int

  def as_dict(self) -> dict[str, float]:
    return {"loss": self.loss, "bits_per_byte": self.bits_per_byte, "tokens": self.tokens}


def make_eval_step(model: Transformer, byte_lengths: np.ndarray, edits_of=None):
  """A jittable (params, batch, *extra) -> (sum nats, sum tokens, sum bytes) over the batch.

  With `edits_of`, the forward runs with the hook edits `edits_of(*extra)` (e.g. fake
  quantization whose scales are traced `extra` arguments, so new scales do not recompile).
  """
  byte_lengths_V = jnp.asarray(byte_lengths, jnp.float32)

  def eval_step(params: Any, batch: dict[str, jax.Array], *extra):
    tokens_BxT1 = batch["tokens"]
    targets_BxT = tokens_BxT1[:, 1:]
    if edits_of is None:
      logits = model.apply({"params": params}, tokens_BxT1[:, :-1])
    else:
      logits, _ = run_model(model, params, tokens_BxT1[:, :-1], edits=edits_of(*extra))
    w_BxT = jnp.broadcast_to(batch["weights"][:, None], targets_BxT.shape)
    nats = jnp.sum(loss_lib.token_losses(logits, targets_BxT) * w_BxT)
    return nats, jnp.sum(w_BxT), jnp.sum(byte_lengths_V[targets_BxT] * w_BxT)

  return eval_step


def evaluate(
  eval_step,
  params: Any,
  windows: PackedWindows,
  batch_size: int,
  mesh: Mesh,
  max_sequences: int | None = None,
) -> LMEval:
  """Run a (jitted) eval step over the first `max_sequences` windows (all if None)."""
  totals = np.zeros(3, np.float64)
  batches = eval_batches(
    windows,
    batch_size,
    max_sequences=max_sequences,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  pending = []
  for batch in batches:
    pending.append(eval_step(params, sharding.global_batch(batch, mesh)))
    if len(pending) > 2:  # Keep a couple of batches in flight, not the whole split.
      totals += np.asarray(jax.device_get(pending.pop(0)), np.float64)
  for result in pending:
    totals += np.asarray(jax.device_get(result), np.float64)
  nats, tokens, n_bytes = totals
  return LMEval(
    loss=float(nats / max(tokens, 1)),
    bits_per_byte=loss_lib.bits_per_byte(nats, n_bytes),
    tokens=int(tokens),
    bytes=int(n_bytes),
  )
