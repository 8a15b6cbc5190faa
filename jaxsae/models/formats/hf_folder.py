"""A Hugging Face model folder on local disk: config.json, safetensors weights (one file or an
index and its shards) and a tokenizer (tokenizer.json, a SentencePiece tokenizer.model, or
GPT-2's vocab.json + merges.txt).
Nothing is unpickled: pytorch_model.bin folders are refused by the loaders with the conversion.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from jaxsae.errors import CheckpointError, JaxsaeError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_MODEL = "tokenizer.model"


def read_config(folder: pathlib.Path) -> dict[str, Any]:
  """config.json as a dict, or a CheckpointError saying what is wrong with it."""
  path = folder / CONFIG_FILE
  try:
    values = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is not readable JSON ({e}); download it again") from e
  if not isinstance(values, dict):
    raise CheckpointError(f"{path} is not a JSON object; download it again")
  return values


def read_safetensors(path: pathlib.Path) -> dict[str, Any]:
  """Every tensor of a safetensors file (the `safetensors` library checks its header: JSON,
  dtypes, byte ranges). The flax framework, not numpy, so bfloat16 checkpoints load too."""
  from safetensors import SafetensorError, safe_open

  try:
    with safe_open(str(path), framework="flax") as f:
      return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(
      f"{path} is not a valid safetensors file ({e}); download it again (a partial download or "
      "a git-lfs pointer file looks like this)"
    ) from e


def read_weights(folder: pathlib.Path) -> tuple[dict[str, Any], str]:
  """The tensors of model.safetensors, or of every shard model.safetensors.index.json names."""
  if (folder / WEIGHTS_FILE).is_file():
    return read_safetensors(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE)
  index = folder / WEIGHTS_INDEX
  try:
    weight_map = json.loads(index.read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise CheckpointError(
      f"{index} is not a valid safetensors index ({e}); download it again"
    ) from e
  absent = [s for s in shards if not (folder / s).is_file()]
  if absent:
    raise CheckpointError(
      f"{folder} lacks the weight shards {absent} that {WEIGHTS_INDEX} names; download them "
      "into the same folder"
    )
  tensors: dict[str, Any] = {}
  for shard in shards:
    tensors |= read_safetensors(folder / shard)
  return tensors, f"the shards of {index}"


def tokenizer(folder: pathlib.Path, values: dict[str, Any]):
  """A `BPETokenizer` over the folder's tokenizer.json, or else its SentencePiece
  tokenizer.model, whose separator is the model's BOS token (the EOS token for models without
  one: GPT-NeoX, Qwen), as its documents begin."""
  from jaxsae.text.tokenizer import BPETokenizer

  path = folder / TOKENIZER_JSON
  if not path.is_file():
    if (folder / TOKENIZER_MODEL).is_file():
      from jaxsae.text import sentencepiece_model

      model = folder / TOKENIZER_MODEL
      metadata = sentencepiece_model.read_sentencepiece(model)
      pieces = metadata["tokenizer.ggml.tokens"]
      piece = lambda i: pieces[i] if 0 <= i < len(pieces) else None  # noqa: E731
      return sentencepiece_model.tokenizer_of(metadata, model, _separator(piece, values))
    raise CheckpointError(
      f"{folder} has no {TOKENIZER_JSON} or {TOKENIZER_MODEL}; download it with the model"
    )
  try:
    import tokenizers

    hf = tokenizers.Tokenizer.from_file(str(path))
  except ImportError as e:
    raise JaxsaeError(
      "Hugging Face tokenizers need the `tokenizers` package: pip install tokenizers"
    ) from e
  except Exception as e:  # tokenizers raises its own exception type on malformed files.
    raise CheckpointError(f"cannot read {path} ({e}); download it again") from e
  try:
    return BPETokenizer(folder, _separator(hf.id_to_token, values))
  except JaxsaeError as e:
    raise CheckpointError(f"cannot use the tokenizer in {folder}: {e}") from e


def _separator(id_to_token, values: dict[str, Any]) -> str | None:
  """The config's BOS token, else its EOS token, as `id_to_token` spells it."""
  for key in ("bos_token_id", "eos_token_id"):
    token_id = values.get(key)
    if isinstance(token_id, list):
      token_id = token_id[0] if token_id else None
    if isinstance(token_id, int) and id_to_token(token_id) is not None:
      return id_to_token(token_id)
  return None
