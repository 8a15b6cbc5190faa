"""`LanguageModel`: a transformer's config, parameters and tokenizer in one bundle, and what
runs it (jitted forwards with hook captures and edits, sampling, model-parallel placement).
Harvesting, evals, steering and circuits take one; `jaxsae.models.pretrained` loads and saves
them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.models import hooks as hooks_lib
from jaxsae.models import sampling
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, run
from jaxsae.text.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class LanguageModel:
  """A transformer with its parameters and tokenizer: what harvesting, evals and steering take."""

  config: TransformerConfig
  params: Any
  tokenizer: Tokenizer
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def module(self) -> Transformer:
    return Transformer(self.config)

  def on_mesh(self, mesh) -> LanguageModel:
    """A copy whose parameters are model-parallel over `mesh`'s "model" axis (query and KV
    heads, MLP neurons and the vocabulary, each where the axis divides it; see
    `jaxsae.sharding.LOGICAL_RULES`) and replicated over "data". Its forward equals this one's."""
    from jaxsae import sharding
    from jaxsae.models.transformer import abstract_params

    shardings = sharding.logical_shardings(abstract_params(self.module), mesh)
    return dataclasses.replace(self, params=jax.device_put(self.params, shardings))

  def hook_names(self) -> list[str]:
    """This model's hook names, in forward order (`hooks.all_names` of its config)."""
    return hooks_lib.all_names(self.config)

  def encode(self, text: str, *, separator: bool = True) -> np.ndarray:
    """Token ids of `text`, preceded by the separator (the start-of-document token)."""
    ids = self.tokenizer.encode(text)
    return (
      np.concatenate([[self.tokenizer.separator_id], ids]).astype(np.int32) if separator else ids
    )

  def run(
    self,
    tokens_BxT,
    *,
    capture: Iterable[str] = (),
    edits: Mapping[str, hooks_lib.EditFn] | None = None,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Jitted `transformer.run`. Captures alone reuse a compiled function; edits recompile."""
    tokens = jnp.asarray(tokens_BxT, jnp.int32)
    if tokens.ndim == 1:
      tokens = tokens[None]
    if edits:
      fn = jax.jit(functools.partial(run, self.module, capture=tuple(capture), edits=edits))
      return fn(self.params, tokens)
    return _jitted_run(self.config, tuple(sorted(set(capture))))(self.params, tokens)

  def generate(
    self,
    prompt: str,
    max_new_tokens: int = 200,
    *,
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    edits: Mapping[str, hooks_lib.EditFn] | None = None,
  ) -> str:
    """Sample a continuation of `prompt` (the returned text excludes the prompt)."""
    prompt_ids = self.encode(prompt)[None]
    sampler = sampling.make_sampler(
      self.module, max_new_tokens, temperature=temperature, top_k=top_k, edits=edits
    )
    out = sampler(self.params, jnp.asarray(prompt_ids), jax.random.key(seed))
    return self.tokenizer.decode(np.asarray(out[0, prompt_ids.shape[1] :]))


@functools.lru_cache(maxsize=32)
def _jitted_run(config: TransformerConfig, capture: tuple[str, ...]):
  return jax.jit(functools.partial(run, Transformer(config), capture=capture))
