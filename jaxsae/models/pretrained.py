"""Saved language models and their names: `config.json` + `model.safetensors` in a folder,
written by `save` and read by `load`, which returns a `LanguageModel`
(`jaxsae.models.language_model`, the runtime; re-exported here).

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

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxsae import format_tags, saved
from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.models.config import TransformerConfig
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer, param_shapes
from jaxsae.text.tokenizer import Tokenizer, load_tokenizer

FORMAT = format_tags.tag("lm")
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
  doc = saved.read_document(config_file, "lm", "re-export the model")
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
