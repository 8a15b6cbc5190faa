"""Sparsity of ablation effects (TopK paper, §4.5): how many downstream logits one latent moves.

For a latent i, ablate it at the hook at every position, x ← x − z_i·w_i (the activation keeps
the SAE's error term; only the latent's own contribution is removed), and take the change Δ in
the logits over all positions and the vocabulary. (‖Δ‖₁/‖Δ‖₂)² is the effective number of entries
it touches (`metrics.ablation_sparsity`); its ratio to len(Δ) is reported too. Both are averaged
over latents that fire on the windows (an ablation of a silent latent changes nothing).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.evals.metrics import ablation_sparsity
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model
from jaxsae.sae import evaluate
from jaxsae.sae.config import SAEConfig


@functools.lru_cache(maxsize=8)
def _ablated_logits_fn(lm_config, hook: str):
  model = Transformer(lm_config)

  def logits(params, tokens_BxT, codes_BxT, direction_D):
    def edit(x_BxTxD):
      return x_BxTxD - (codes_BxT[..., None] * direction_D).astype(x_BxTxD.dtype)

    return run_model(model, params, tokens_BxT, edits={hook: edit})[0]

  # One latent per vmapped lane: codes (L, B, T), directions (L, D).
  return jax.jit(jax.vmap(logits, in_axes=(None, None, 0, 0)))


def latent_directions(decode, variables, latents) -> np.ndarray:
  """(L, D) raw-unit contribution per unit activation of each latent: decode(e_i) − decode(0)."""
  n = variables["params"]["W_dec"].shape[0]
  basis = jnp.zeros((len(latents) + 1, n)).at[jnp.arange(len(latents)), jnp.asarray(latents)].set(1)
  out = np.asarray(decode(variables, basis))
  return out[:-1] - out[-1]


def ablation_sparsity_of_latents(
  lm: LanguageModel,
  tokens_BxT: np.ndarray,
  hook: str,
  config: SAEConfig,
  variables,
  scale: float = 1.0,
  latents=None,
  max_latents: int = 32,
  lanes: int = 8,
  seed: int = 0,
) -> dict:
  """Mean effective number of logits each latent's ablation changes, and that over len(Δ).

  The SAE (`config`, `variables`) was trained on scale·x (scale 1 for an exported SAE);
  `latents` defaults to up to `max_latents` latents drawn among those that fire on the tokens.
  Returns {"effective", "fraction", "latents", "per_latent_effective", "entries"}.
  """
  tokens = jnp.asarray(tokens_BxT, jnp.int32)
  logits_clean, captured = lm.run(tokens, capture=[hook])
  x_NxD = captured[hook].reshape(-1, captured[hook].shape[-1]).astype(jnp.float32)
  codes_NxM = np.asarray(evaluate.encode_decode(config, scale)(variables, x_NxD)[0])
  if latents is None:
    firing = np.flatnonzero((codes_NxM != 0).any(0))
    rng = np.random.default_rng(seed)
    latents = np.sort(rng.choice(firing, size=min(max_latents, len(firing)), replace=False))
  latents = np.asarray(latents, np.int64)
  if len(latents) == 0:
    return {"effective": float("nan"), "fraction": float("nan"), "latents": latents}
  directions = latent_directions(evaluate.decode_fn(config, scale), variables, latents)
  fn = _ablated_logits_fn(lm.config, hook)
  effective = []
  for start in range(0, len(latents), lanes):
    chunk = latents[start : start + lanes]
    codes = jnp.asarray(codes_NxM[:, chunk].T.reshape(len(chunk), *tokens.shape))
    ablated = fn(lm.params, tokens, codes, jnp.asarray(directions[start : start + lanes]))
    for delta in np.asarray(ablated - logits_clean[None], np.float64):
      effective.append(ablation_sparsity(delta)[0])
  effective = np.asarray(effective)
  entries = int(np.prod(logits_clean.shape))
  return {
    "effective": float(effective.mean()),
    "fraction": float(effective.mean() / entries),
    "latents": latents,
    "per_latent_effective": effective,
    "entries": entries,
  }
