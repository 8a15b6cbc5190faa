"""A SentencePiece `tokenizer.model` (Llama 1–2, Mistral, Gemma) rebuilt with Hugging Face
`tokenizers`, for model folders that ship it without a `tokenizer.json`.

The file is a `ModelProto` protocol buffer, parsed with the `sentencepiece` package's own schema
(no code is run from it). Its pieces, scores and piece types are the vocabulary a GGUF file
carries under `tokenizer.ggml.*` (llama.cpp copies them from this file), so the tokenizer is
built by the same code as for GGUF (`gguf_tokenizer`): BPE with merges ordered by score, byte
fallback, "▁" for spaces. Where the model's `add_dummy_prefix` is set, a space is written
before every text, as sentencepiece does even before a leading space (transformers'
`LlamaConverter` adds none there). As in transformers, control pieces
(`<s>`, `<start_of_turn>`, …) written in the text are matched whole; sentencepiece itself
spells them out.

Only BPE models with the identity normalizer (every LLM above) are rebuilt: unigram models and
NFKC normalization are refused, naming the way to write a `tokenizer.json` instead.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from jaxsae.errors import CheckpointError, JaxsaeError

_BPE = 2  # TrainerSpec.ModelType.
_TOKENIZER_JSON_HINT = (
  "write a tokenizer.json once with transformers: "
  "AutoTokenizer.from_pretrained(folder).save_pretrained(folder)"
)


def read_sentencepiece(path: str | os.PathLike) -> dict[str, Any]:
  """The model's vocabulary as GGUF tokenizer metadata (`tokenizer.ggml.*` keys)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"no SentencePiece model at {path}; pass the path of a tokenizer.model")
  try:
    from sentencepiece import sentencepiece_model_pb2
  except ImportError as e:
    raise JaxsaeError(
      "tokenizer.model files need the `sentencepiece` and `protobuf` packages: "
      "pip install 'jaxsae[hf]'"
    ) from e
  model = sentencepiece_model_pb2.ModelProto()
  try:
    model.ParseFromString(path.read_bytes())
  except Exception as e:  # protobuf's DecodeError, or a file of another kind.
    raise CheckpointError(f"{path} is not a SentencePiece model ({e}); download it again") from e
  if not model.pieces:
    raise CheckpointError(f"{path} holds no vocabulary; download it again")
  trainer, normalizer = model.trainer_spec, model.normalizer_spec
  if trainer.model_type != _BPE:
    kind = trainer.ModelType.Name(trainer.model_type)
    raise CheckpointError(
      f"{path} is a SentencePiece {kind} model; jaxsae rebuilds BPE ones (Llama, Mistral, "
      f"Gemma). {_TOKENIZER_JSON_HINT}"
    )
  if normalizer.name not in ("identity", "") or normalizer.remove_extra_whitespaces:
    raise CheckpointError(
      f"{path} normalizes its text ({normalizer.name or 'custom rules'}, extra whitespace "
      f"removed: {normalizer.remove_extra_whitespaces}); jaxsae rebuilds identity-normalized "
      f"models only. {_TOKENIZER_JSON_HINT}"
    )
  metadata: dict[str, Any] = {
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": [p.piece for p in model.pieces],
    "tokenizer.ggml.scores": [p.score for p in model.pieces],
    "tokenizer.ggml.token_type": [int(p.type) for p in model.pieces],  # llama.cpp's numbering.
    "tokenizer.ggml.add_space_prefix": normalizer.add_dummy_prefix,
  }
  for key, token_id in (
    ("bos", trainer.bos_id),
    ("eos", trainer.eos_id),
    ("unknown", trainer.unk_id),
    ("padding", trainer.pad_id),
  ):
    if 0 <= token_id < len(model.pieces):
      metadata[f"tokenizer.ggml.{key}_token_id"] = token_id
  return metadata


def load_sentencepiece_tokenizer(path: str | os.PathLike, separator: str | None = None):
  """A jaxsae `BPETokenizer` over a tokenizer.model (spec "spm:PATH" or "spm:PATH:SEPARATOR");
  documents are separated by `separator`, by default the model's BOS piece."""
  return tokenizer_of(read_sentencepiece(path), path, separator)


def tokenizer_of(metadata: dict[str, Any], path: str | os.PathLike, separator: str | None = None):
  """`load_sentencepiece_tokenizer` on metadata `read_sentencepiece(path)` already returned."""
  import tokenizers

  from jaxsae.text.gguf_tokenizer import gguf_tokenizer
  from jaxsae.text.gguf_tokenizer import separator as default_separator
  from jaxsae.text.tokenizer import BPETokenizer

  try:
    tok = gguf_tokenizer(metadata)
    separator = separator or default_separator(metadata)
    spec = f"spm:{path}:{separator}"
    prefix = ""
    if metadata["tokenizer.ggml.add_space_prefix"]:  # sentencepiece's dummy prefix, always.
      tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(prepend_scheme="never", split=False)
      prefix = " "
    return BPETokenizer.from_tokenizer(tok, separator, spec, byte_level=False, prefix=prefix)
  except JaxsaeError as e:
    raise CheckpointError(f"cannot use the tokenizer in {path}: {e}") from e
