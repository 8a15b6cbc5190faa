"""Saved language models: `config.json` + `model.safetensors` in a folder, and the
`LanguageModel` bundle (config, params, tokenizer) that users load and run.

The shipped default lives in `jaxsae/pretrained/stdlib_bytes` and loads with
`load("default")`. Weights are safetensors (nothing pickled); names are the parameter paths joined
with "/", e.g. "blocks_0/attn/query/kernel". Every tensor is checked against the shapes the
config implies before use.

Other formats load through `jaxsae.models.external` (see `load`): Hugging Face folders of every
supported family, GGUF files, Hub ids (the only path that downloads) and installed model
packages. The names of `HF_NAMED` ("gpt2") resolve to `$JAXSAE_MODELS/<name>` (default
~/jaxsae_models/<name>).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxsae import saved
from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import sampling
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, param_shapes, run
from jaxsae.text.tokenizer import Tokenizer, load_tokenizer

FORMAT = "jaxsae.lm"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained"
NAMED = {
  "default": "stdlib_bytes",
  "stdlib_bytes": "stdlib_bytes",
  # Weight-sparse model (hidden matrices 1/16 nonzero) and its dense twins (Gao et al. 2025):
  "sparse": "stdlib_sparse",
  "dense": "stdlib_dense",  # same shape, trained to the end
  "dense_matched": "stdlib_dense_matched",  # same shape, stopped at the sparse model's test loss
}
# Hugging Face GPT-2 checkpoints the user puts in $JAXSAE_MODELS/<name>: name -> Hub repo.
HF_NAMED = {
  "gpt2": "openai-community/gpt2",
  "gpt2-medium": "openai-community/gpt2-medium",
  "gpt2-large": "openai-community/gpt2-large",
  "gpt2-xl": "openai-community/gpt2-xl",
}
MODELS_ENV = "JAXSAE_MODELS"
DEFAULT_MODELS_DIR = "~/jaxsae_models"


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


def _flatten(params: Any) -> dict[str, np.ndarray]:
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  return {k: np.asarray(v) for k, v in flat.items()}


def save(
  path: str | pathlib.Path,
  config: TransformerConfig,
  params: Any,
  tokenizer: Tokenizer,
  metadata: Mapping[str, Any] | None = None,
) -> pathlib.Path:
  """Write `config.json` and `model.safetensors` to the folder `path` (created if needed)."""
  from safetensors.numpy import save_file

  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  save_file(_flatten(params), str(path / WEIGHTS_FILE))
  doc = {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "model": config.to_dict(),
    "tokenizer": tokenizer.spec(),
    "metadata": dict(metadata or {}),
  }
  (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
  return path


def models_dir() -> pathlib.Path:
  """Where the `HF_NAMED` checkpoints live: $JAXSAE_MODELS, default ~/jaxsae_models."""
  return pathlib.Path(os.environ.get(MODELS_ENV) or DEFAULT_MODELS_DIR).expanduser()


def resolve(name_or_path: str | pathlib.Path) -> pathlib.Path:
  """A shipped model's name ("default"), an `HF_NAMED` name ("gpt2") or a folder -> the folder."""
  if str(name_or_path) in NAMED:
    return PRETRAINED_DIR / NAMED[str(name_or_path)]
  if str(name_or_path) in HF_NAMED:
    return models_dir() / str(name_or_path)
  return pathlib.Path(name_or_path).expanduser()


def load(
  name_or_path: str | pathlib.Path = "default", *, dtype: str | None = None
) -> LanguageModel:
  """Load a language model from any of:

  - a jaxsae folder or a shipped model's name (`NAMED`, e.g. "default"), checking format,
    version and every tensor's name and shape;
  - a Hugging Face folder of a supported family (`jaxsae.models.families`: GPT-2, Llama,
    Mistral, Qwen 2/3, Gemma 1-3, GPT-NeoX), or an `HF_NAMED` name kept in $JAXSAE_MODELS;
  - a .gguf file (`jaxsae.models.formats.gguf`);
  - a Hugging Face Hub id such as "google/gemma-3-270m" (downloaded when online, read from the
    cache offline; `jaxsae.models.formats.hub`);
  - the name of an installed model package (`external.PACKAGED_GGUF`: "gemma-3-270m").

  `dtype` applies to external models: None loads float32, or bfloat16 above 2B parameters.
  """
  from jaxsae.models import external, hf_gpt2
  from jaxsae.models.formats import hub

  path = resolve(name_or_path)
  name = str(name_or_path)
  if name in external.PACKAGED_GGUF:
    return external.load_gguf(external.packaged_gguf_path(name), dtype)
  if path.is_file() and (path.suffix == ".gguf" or external.is_gguf(path)):
    return external.load_gguf(path, dtype)
  if hf_gpt2.is_hf_checkpoint(path) and name not in HF_NAMED:
    return external.load_hf_folder(path, dtype)
  if hub.looks_like_repo_id(name) and name not in NAMED and name not in HF_NAMED:
    return external.load_hub(name, dtype)
  if name in HF_NAMED:
    env = os.environ.get(MODELS_ENV)
    now = f"it is {env}" if env else f"unset, so {DEFAULT_MODELS_DIR}"
    how_else = (
      f". Or keep them elsewhere: set {MODELS_ENV} to a directory holding {name}/ ({now}), or "
      "pass the folder itself as the model (e.g. --config.harvest.model=FOLDER)"
    )
    return hf_gpt2.load_gpt2(path, HF_NAMED[name], how_else)
  if hf_gpt2.looks_like_hf(path):
    return hf_gpt2.load_gpt2(path)
  config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
  if not config_file.is_file() or not weights_file.is_file():
    raise CheckpointError(
      f"no saved model at {path}: expected {CONFIG_FILE} and {WEIGHTS_FILE}; pass a folder "
      f"written by jaxsae.models.pretrained.save or experiments.export_lm, one of {sorted(NAMED)}, "
      f"a Hugging Face folder ({CONFIG_FILE}, {WEIGHTS_FILE}, tokenizer.json or .model), "
      f'a .gguf file, a Hub id such as "google/gemma-3-270m", "gemma-3-270m" (an installed package), '
      f"or one of {sorted(HF_NAMED)} (kept in ${MODELS_ENV}, default {DEFAULT_MODELS_DIR})"
    )
  doc = saved.read_document(config_file, FORMAT, FORMAT_VERSION, "re-export the model")
  try:
    config = TransformerConfig.from_dict(doc["model"])
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{config_file} holds an invalid model config: {e}") from e
  params = _load_weights(weights_file, config)
  try:
    tokenizer = load_tokenizer(doc["tokenizer"])
  except JaxsaeError as e:
    raise CheckpointError(f"{config_file}: cannot load its tokenizer: {e}") from e
  return LanguageModel(config, params, tokenizer, doc.get("metadata", {}))


def _load_weights(weights_file: pathlib.Path, config: TransformerConfig) -> Any:
  expected = {
    k: v.shape
    for k, v in traverse_util.flatten_dict(param_shapes(Transformer(config)), sep="/").items()
  }
  flat = saved.read_tensors(weights_file, expected, "the config")
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
