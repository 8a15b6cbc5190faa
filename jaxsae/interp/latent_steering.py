"""Steering a language model with an SAE latent: add or clamp the latent's decoder direction at
its hook during a forward pass or while sampling.

  add:    x' = x + a·d_i                          (raise latent i's contribution by a)
  clamp:  x' = x + (a − z_i(x))·d_i               (Templeton et al. 2024, "Scaling
                                                   Monosemanticity": set latent i to a, keep the
                                                   SAE's reconstruction error and other latents)

d_i = W_dec[i] of an exported SAE, which acts on raw activations (`jaxsae.sae.export`), so a is
in the latent's own units: clamping to a multiple of its largest activation on the corpus is the
usual choice. Edits act at every position of the window (prompt and sampled tokens alike).
`logit_effect` is the direct path d_i·W_U (final norm left out, as in `interp.browser`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.interp import browser
from jaxsae.models import hooks as hooks_lib
from jaxsae.sae import evaluate
from jaxsae.sae.config import SAEConfig

if TYPE_CHECKING:
  from jaxsae.models.language_model import LanguageModel

MODES = ("add", "clamp")


def _check_latent(config: SAEConfig, latent: int) -> int:
  if not isinstance(latent, (int, np.integer)) or not 0 <= latent < config.n_latents:
    raise JaxsaeError(
      f"latent={latent!r} is not a latent of this SAE: pass an int in [0, {config.n_latents})"
    )
  return int(latent)


def direction(config: SAEConfig, variables: Mapping[str, Any], latent: int) -> jax.Array:
  """d_i = W_dec[i] (d_in,) of an exported SAE (raw activation units)."""
  return jnp.asarray(variables["params"]["W_dec"][_check_latent(config, latent)], jnp.float32)


def latent_edit(
  config: SAEConfig, variables: Mapping[str, Any], latent: int, value: float, mode: str = "add"
) -> hooks_lib.EditFn:
  """The hook edit x -> x' above, for activations (..., d_in) at the SAE's hook."""
  if mode not in MODES:
    raise JaxsaeError(f'unknown steering mode "{mode}": use one of {MODES}')
  d_D = direction(config, variables, latent)
  value = jnp.float32(value)
  if mode == "add":
    return lambda x: x + value * d_D.astype(x.dtype)
  encode_decode = evaluate.encode_decode(config)

  def clamp(x):
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    z_i = encode_decode(variables, flat)[0][:, latent]
    return (flat + (value - z_i)[:, None] * d_D).reshape(x.shape)

  return clamp


def steering_edits(
  hook: str,
  config: SAEConfig,
  variables: Mapping[str, Any],
  latent: int,
  value: float,
  mode: str = "add",
) -> dict[str, hooks_lib.EditFn]:
  """{hook: edit}, ready for `LanguageModel.run(edits=...)` and `.generate(edits=...)`."""
  return {hook: latent_edit(config, variables, latent, value, mode)}


def logit_effect(lm: LanguageModel, config: SAEConfig, variables, latent: int) -> np.ndarray:
  """(vocab,) d_i · W_U: the tokens latent i promotes (positive) or suppresses, directly."""
  d_D = np.asarray(direction(config, variables, latent))
  if d_D.shape[0] != lm.config.d_model:
    raise JaxsaeError(
      f"the SAE reads width {d_D.shape[0]} but the model's residual is {lm.config.d_model}: "
      "logit effects need an SAE on a residual-stream hook of this model"
    )
  return d_D @ browser.unembedding(lm)


def top_logit_tokens(lm: LanguageModel, config: SAEConfig, variables, latent: int, k: int = 10):
  """The k token ids latent i promotes most (largest d_i · W_U), largest first."""
  effect = logit_effect(lm, config, variables, latent)
  return np.argsort(-effect, kind="stable")[:k]


def token_probability(
  lm: LanguageModel,
  tokens_BxT,
  token_ids: Sequence[int],
  edits: Mapping[str, hooks_lib.EditFn] | None = None,
) -> float:
  """Mean over positions of the next-token probability mass on `token_ids`, with `edits`."""
  logits_BxTxV, _ = lm.run(tokens_BxT, edits=edits)
  probs = jax.nn.softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return float(jnp.mean(jnp.sum(probs[..., jnp.asarray(list(token_ids))], axis=-1)))


def steer(
  lm: LanguageModel,
  prompt: str,
  hook: str,
  config: SAEConfig,
  variables: Mapping[str, Any],
  latent: int,
  value: float,
  mode: str = "add",
  **generate_options,
) -> str:
  """Sample a continuation of `prompt` with latent i added or clamped at `hook`."""
  edits = steering_edits(hook, config, variables, latent, value, mode)
  return lm.generate(prompt, edits=edits, **generate_options)
