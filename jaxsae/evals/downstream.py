"""Downstream loss: splice a reconstruction into the language model at its hook, run to the end.

    ΔCE = CE_spliced − CE_clean
    CE recovered = (CE_abl − CE_spliced) / (CE_abl − CE_clean), abl = zero- or mean-ablation
    KL score = 1 − KL_spliced / KL_zero,   KL = mean over predictions of KL(p_clean ‖ p_edited)

CE is the mean next-token cross-entropy (nats) over every prediction of the windows. The hook
is replaced at every position except separator (start-of-document) positions and the first
`skip_first` positions of each window, which the SAE never saw in training (the harvest skips
them, e.g. GPT-2's position-0 attention sink); zero ablation replaces the same positions with
zeros and mean ablation with the mean activation over those positions of the same windows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.lm.loss import token_losses
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model

# reconstruct(variables, x_NxD) -> x̂_NxD, on raw activations.
Reconstruct = Callable[[object, jax.Array], jax.Array]
MODES = ("clean", "zero", "mean", "spliced")


@functools.lru_cache(maxsize=16)
def _edited_sums_fn(
  lm_config, hook: str, separator_id: int, reconstruct, mode: str, skip_first: int = 0
):
  """jit(params, variables, tokens) -> (Σ CE, Σ KL(p_clean ‖ p_edited)) over the predictions.

  For mode "mean", `variables` is the mean activation (D,)."""
  model = Transformer(lm_config)

  def sums(params, variables, tokens_BxT1):
    inputs, targets = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]
    position = jnp.arange(inputs.shape[1])[None, :]
    keep = ((inputs == separator_id) | (position < skip_first))[..., None]

    def edit(x_BxTxD):
      if mode == "zero":
        new = jnp.zeros_like(x_BxTxD)
      elif mode == "mean":
        new = jnp.broadcast_to(variables.astype(x_BxTxD.dtype), x_BxTxD.shape)
      else:
        flat = x_BxTxD.reshape(-1, x_BxTxD.shape[-1]).astype(jnp.float32)
        new = reconstruct(variables, flat).reshape(x_BxTxD.shape).astype(x_BxTxD.dtype)
      return jnp.where(keep, x_BxTxD, new)

    clean_logits, _ = run_model(model, params, inputs)
    clean_logp = jax.nn.log_softmax(clean_logits.astype(jnp.float32))
    if mode == "clean":
      return jnp.sum(token_losses(clean_logits, targets)), jnp.zeros(())
    logits, _ = run_model(model, params, inputs, edits={hook: edit})
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    kl = jnp.sum(jnp.exp(clean_logp) * (clean_logp - logp))
    return jnp.sum(token_losses(logits, targets)), kl

  return jax.jit(sums)


def edited_losses(
  lm: LanguageModel,
  windows_NxT1: np.ndarray,
  hook: str,
  mode: str,
  reconstruct: Reconstruct | None = None,
  variables=None,
  batch_size: int = 16,
  skip_first: int = 0,
) -> tuple[float, float]:
  """(mean CE, mean KL from the clean model) with the hook left alone ("clean"), zeroed
  ("zero"), set to its mean ("mean"; `variables` is the mean vector) or replaced by
  `reconstruct(variables, x)` ("spliced"), separator positions and the first `skip_first`
  positions of each window excepted."""
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is not one of {MODES}")
  fn = _edited_sums_fn(lm.config, hook, lm.tokenizer.separator_id, reconstruct, mode, skip_first)
  ce = kl = 0.0
  for i in range(0, len(windows_NxT1), batch_size):
    batch_ce, batch_kl = fn(lm.params, variables, jnp.asarray(windows_NxT1[i : i + batch_size]))
    ce, kl = ce + float(batch_ce), kl + float(batch_kl)
  predictions = len(windows_NxT1) * (windows_NxT1.shape[1] - 1)
  return ce / predictions, kl / predictions


def cross_entropy(lm, windows_NxT1, hook, mode, reconstruct=None, variables=None) -> float:
  """Mean next-token CE of `edited_losses`."""
  return edited_losses(lm, windows_NxT1, hook, mode, reconstruct, variables)[0]


def mean_activation(
  lm: LanguageModel, windows_NxT1: np.ndarray, hook: str, batch_size=16, skip_first: int = 0
):
  """(D,) mean of the hook's activation over the windows' input positions that are edited
  (not separators, not among the first `skip_first`)."""
  total, count = None, 0
  for i in range(0, len(windows_NxT1), batch_size):
    inputs = windows_NxT1[i : i + batch_size, :-1]
    _, captured = lm.run(inputs, capture=[hook])
    edited = inputs != lm.tokenizer.separator_id
    edited[:, :skip_first] = False
    x = np.asarray(captured[hook], np.float64)[edited]
    total = x.sum(0) if total is None else total + x.sum(0)
    count += len(x)
  return (total / max(count, 1)).astype(np.float32)


def reference_losses(
  lm: LanguageModel,
  windows_NxT1: np.ndarray,
  hook: str,
  skip_first: int = 0,
  batch_size: int = 16,
) -> dict[str, float]:
  """CE of the clean model and of zero- and mean-ablation, with the ablations' KL.
  `batch_size` windows per forward (lower it for large vocabularies: logits are B × T × V)."""
  mean = mean_activation(lm, windows_NxT1, hook, batch_size, skip_first=skip_first)
  b, skip = batch_size, skip_first
  ce_zero, kl_zero = edited_losses(lm, windows_NxT1, hook, "zero", batch_size=b, skip_first=skip)
  ce_mean, kl_mean = edited_losses(
    lm, windows_NxT1, hook, "mean", variables=jnp.asarray(mean), batch_size=b, skip_first=skip
  )
  return {
    "ce_clean": edited_losses(lm, windows_NxT1, hook, "clean", batch_size=b)[0],
    "ce_zero": ce_zero,
    "ce_mean": ce_mean,
    "kl_zero": kl_zero,
    "kl_mean": kl_mean,
  }


def _recovered(ablated: float, edited: float, clean: float) -> float:
  return (ablated - edited) / (ablated - clean) if ablated != clean else float("nan")


def splice_losses(
  lm: LanguageModel,
  windows_NxT1: np.ndarray,
  hook: str,
  reconstruct: Reconstruct,
  variables,
  reference: dict[str, float] | None = None,
  skip_first: int = 0,
  batch_size: int = 16,
) -> dict[str, float]:
  """The reference losses plus {ce_spliced, delta_ce, ce_recovered (vs zero ablation),
  ce_recovered_mean (vs mean ablation), kl, kl_score}; pass `reference` (from
  `reference_losses`) to compare several reconstructions without recomputing it."""
  reference = reference or reference_losses(lm, windows_NxT1, hook, skip_first, batch_size)
  spliced, kl = edited_losses(
    lm, windows_NxT1, hook, "spliced", reconstruct, variables, batch_size, skip_first
  )
  clean = reference["ce_clean"]
  return {
    **reference,
    "ce_spliced": spliced,
    "delta_ce": spliced - clean,
    "ce_recovered": _recovered(reference["ce_zero"], spliced, clean),
    "ce_recovered_mean": _recovered(reference["ce_mean"], spliced, clean),
    "kl": kl,
    "kl_score": 1.0 - kl / reference["kl_zero"] if reference["kl_zero"] > 0 else float("nan"),
  }


def held_out_and_spliced(
  lm: LanguageModel,
  windows_NxT1: np.ndarray,
  hook: str,
  encode_decode,
  variables,
  held_out,
  reference: dict[str, float],
  skip_first: int = 0,
  batch_size: int = 16,
) -> dict[str, float]:
  """An SAE (or baseline) `encode_decode(variables, x) -> (codes, x̂)` on raw activations:
  its held-out L0, FVU and dead fraction on the `held_out` rows, and its spliced losses
  (`splice_losses`, against `reference`)."""
  from jaxsae.sae import evaluate

  metrics = evaluate.metrics_of(encode_decode, variables, held_out)
  reconstruct = lambda v, x: encode_decode(v, x)[1]  # noqa: E731
  spliced = splice_losses(
    lm, windows_NxT1, hook, reconstruct, variables, reference, skip_first, batch_size
  )
  return {**metrics, **spliced}
