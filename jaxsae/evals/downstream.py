"""Downstream loss: splice a reconstruction into the language model at its hook, run to the end.

    ΔCE = CE_spliced − CE_clean
    CE recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)

CE is the mean next-token cross-entropy (nats) over every prediction of the windows. The hook
is replaced at every position except separator (start-of-document) positions, which the SAE
never saw in training (the harvest skips them); zero ablation replaces the same positions with
zeros.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.lm.loss import mean_loss
from jaxsae.models.pretrained import LanguageModel
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model

# reconstruct(variables, x_NxD) -> x̂_NxD, on raw activations.
Reconstruct = Callable[[object, jax.Array], jax.Array]


@functools.lru_cache(maxsize=16)
def _spliced_loss_fn(lm_config, hook: str, separator_id: int, reconstruct, mode: str):
  model = Transformer(lm_config)

  def loss(params, variables, tokens_BxT1):
    inputs, targets = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]
    keep = (inputs == separator_id)[..., None]

    def edit(x_BxTxD):
      if mode == "clean":
        return x_BxTxD
      if mode == "zero":
        new = jnp.zeros_like(x_BxTxD)
      else:
        flat = x_BxTxD.reshape(-1, x_BxTxD.shape[-1]).astype(jnp.float32)
        new = reconstruct(variables, flat).reshape(x_BxTxD.shape).astype(x_BxTxD.dtype)
      return jnp.where(keep, x_BxTxD, new)

    logits, _ = run_model(model, params, inputs, edits={hook: edit})
    return mean_loss(logits, targets, jnp.ones(inputs.shape[0], jnp.float32))

  return jax.jit(loss)


def cross_entropy(
  lm: LanguageModel,
  windows_NxT1: np.ndarray,
  hook: str,
  mode: str,
  reconstruct: Reconstruct | None = None,
  variables=None,
  batch_size: int = 16,
) -> float:
  """Mean next-token CE with the hook left alone ("clean"), zeroed ("zero") or replaced by
  `reconstruct(variables, x)` ("spliced"), separator positions excepted."""
  fn = _spliced_loss_fn(lm.config, hook, lm.tokenizer.separator_id, reconstruct, mode)
  total = 0.0
  for i in range(0, len(windows_NxT1), batch_size):
    batch = windows_NxT1[i : i + batch_size]
    total += float(fn(lm.params, variables, jnp.asarray(batch))) * len(batch)
  return total / len(windows_NxT1)


def splice_losses(
  lm: LanguageModel,
  windows_NxT1: np.ndarray,
  hook: str,
  reconstruct: Reconstruct,
  variables,
  reference: dict[str, float] | None = None,
) -> dict[str, float]:
  """{ce_clean, ce_zero, ce_spliced, delta_ce, ce_recovered}; pass `reference` (the clean and
  zero CE from `reference_losses`) to compare several reconstructions without recomputing."""
  reference = reference or reference_losses(lm, windows_NxT1, hook)
  spliced = cross_entropy(lm, windows_NxT1, hook, "spliced", reconstruct, variables)
  clean, zero = reference["ce_clean"], reference["ce_zero"]
  return {
    **reference,
    "ce_spliced": spliced,
    "delta_ce": spliced - clean,
    "ce_recovered": (zero - spliced) / (zero - clean) if zero != clean else float("nan"),
  }


def reference_losses(lm: LanguageModel, windows_NxT1: np.ndarray, hook: str) -> dict[str, float]:
  return {
    "ce_clean": cross_entropy(lm, windows_NxT1, hook, "clean"),
    "ce_zero": cross_entropy(lm, windows_NxT1, hook, "zero"),
  }
