"""Next-token cross-entropy and its conversion to bits per byte."""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax


def token_losses(logits_BxTxV: jnp.ndarray, targets_BxT: jnp.ndarray) -> jnp.ndarray:
  """Cross-entropy in nats of each target token, (B, T) float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
    logits_BxTxV.astype(jnp.float32), targets_BxT
  )


def mean_loss(
  logits_BxTxV: jnp.ndarray, targets_BxT: jnp.ndarray, weights_B: jnp.ndarray
) -> jnp.ndarray:
  """Mean cross-entropy (nats/token) over the sequences with weight 1."""
  losses_BxT = token_losses(logits_BxTxV, targets_BxT)
  total = jnp.sum(losses_BxT * weights_B[:, None])
  return total / jnp.maximum(jnp.sum(weights_B) * targets_BxT.shape[1], 1.0)


def bits_per_byte(total_nats: float, total_bytes: float) -> float:
  """Total loss in bits divided by the UTF-8 bytes of the predicted text.

  Separator tokens stand for 0 bytes, so their loss is charged to the text's bytes.
  """
  return total_nats / math.log(2) / max(total_bytes, 1)
