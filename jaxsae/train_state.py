"""The one train-state shape shared by LM, SAE and weight-sparse training.

Checkpointing, resume and fault tests are written once against it.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step, parameters, optimizer state, and trainer-specific counters (`extras`)."""

  step: jax.Array
  params: Any
  opt_state: Any
  extras: Any = None

  @classmethod
  def create(cls, params: Any, optimizer, extras: Any = None) -> TrainState:
    return cls(jnp.zeros((), jnp.int32), params, optimizer.init(params), extras)
