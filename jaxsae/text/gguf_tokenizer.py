"""The tokenizer a GGUF file describes (its `tokenizer.ggml.*` metadata), rebuilt with Hugging
Face `tokenizers` the way transformers does (`integrations/gguf/gguf_tokenizer_mapping.py` with
the Gemma, Llama and GPT-2 tokenizer classes it hands the vocabulary to):

  "llama"  SentencePiece-style BPE (Gemma, Llama 2): vocabulary with scores, no merges (they are
           derived from the vocabulary), byte fallback, "▁" for spaces; Gemma's files list their
           merges in vocabulary order and spell whitespace tokens with real spaces.
  "gpt2"   byte-level BPE with `tokenizer.ggml.merges` (Llama 3, Qwen), split by the regex that
           `tokenizer.ggml.pre` names.

Control tokens become special added tokens and user-defined ones plain added tokens, as llama.cpp
matches both whole. `load_gguf_tokenizer` wraps the result as a jaxsae tokenizer.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from jaxsae.errors import JaxsaeError

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types (SentencePiece's piece types).
_SPACE = "\u2581"
# Architectures whose "llama" vocabulary is Gemma's (transformers' GGUF_SENTENCEPIECE_BUILDERS).
_GEMMA = ("gemma", "gemma2", "gemma3")

# `tokenizer.ggml.pre` -> the split regex the merges were learned under (transformers'
# GGUF_PRE_TOKENIZER_SPLITS, from llama.cpp's llama-vocab.cpp). Others keep GPT-2's split, as
# in transformers.
_LLAMA3_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
  r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
  r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
  r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
  r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
  r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
  r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
  r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
  r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {
  **dict.fromkeys(
    (
      "llama3",
      "llama-v3",
      "llama-bpe",
      "falcon3",
      "falcon-h1",
      "pixtral",
      "midm-2.0",
      "lfm2",
      "jina-v5-nano",
      "dbrx",
      "smaug-bpe",
    ),
    _LLAMA3_SPLIT,
  ),
  "tekken": _TEKKEN_SPLIT,
  **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
  "qwen35": _QWEN35_SPLIT,
  **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}


def gguf_tokenizer(metadata: Mapping[str, Any]):
  """A `tokenizers.Tokenizer` from GGUF metadata with its vocabulary arrays (as
  `jaxsae.models.formats.gguf.read_metadata` returns it). Adds no BOS: callers do."""
  tokenizers = _import_tokenizers()
  kind = metadata.get("tokenizer.ggml.model")
  if "tokenizer.ggml.tokens" not in metadata:
    raise JaxsaeError("the GGUF file has no vocabulary (tokenizer.ggml.tokens); use another file")
  n = len(metadata["tokenizer.ggml.tokens"])
  for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
    if len(metadata.get(key) or [0] * n) != n:
      raise JaxsaeError(f"the GGUF file's {key} does not list one value per token; it is corrupt")
  if kind == "llama":
    if metadata.get("general.architecture") in _GEMMA:
      tok = _gemma(tokenizers, metadata)
    else:
      tok = _sentencepiece(tokenizers, metadata)
  elif kind == "gpt2":
    tok = _byte_level(tokenizers, metadata)
  else:
    raise JaxsaeError(
      f"the GGUF tokenizer is of type {kind!r}; jaxsae rebuilds 'llama' (SentencePiece BPE) and "
      "'gpt2' (byte-level BPE) tokenizers. Use the model's Hugging Face tokenizer.json instead"
    )
  _add_special_tokens(tokenizers, tok, metadata, byte_level=kind == "gpt2")
  return tok


def separator(metadata: Mapping[str, Any]) -> str:
  """The token jaxsae writes before each document: BOS where the file adds one, else EOS."""
  tokens = metadata["tokenizer.ggml.tokens"]
  # llama.cpp and transformers add BOS to a SentencePiece vocabulary that does not say.
  add_bos = metadata.get(
    "tokenizer.ggml.add_bos_token", metadata.get("tokenizer.ggml.model") == "llama"
  )
  key = "tokenizer.ggml.bos_token_id" if add_bos else "tokenizer.ggml.eos_token_id"
  if metadata.get(key) is None:
    raise JaxsaeError(f"the GGUF tokenizer has no {key.rsplit('.', 1)[1]}; use another file")
  return tokens[metadata[key]]


def load_gguf_tokenizer(path: str | os.PathLike):
  """The GGUF file's tokenizer as a jaxsae `BPETokenizer` (spec "gguf:PATH")."""
  from jaxsae.errors import CheckpointError
  from jaxsae.models.formats.gguf import read_metadata
  from jaxsae.text.tokenizer import BPETokenizer

  metadata = read_metadata(path)
  try:
    tok = gguf_tokenizer(metadata)
    sep = separator(metadata)
  except JaxsaeError as e:
    raise CheckpointError(f"{path}: {e}") from e
  byte_level = metadata.get("tokenizer.ggml.model") == "gpt2"
  return BPETokenizer.from_tokenizer(tok, sep, f"gguf:{path}", byte_level=byte_level)


def _import_tokenizers():
  try:
    import tokenizers
  except ImportError as e:
    raise JaxsaeError(
      "GGUF tokenizers need the `tokenizers` package: pip install 'jaxsae[bpe]'"
    ) from e
  return tokenizers


def _gemma(tokenizers, metadata):
  """transformers' `gemma_tokenizer` + `GemmaTokenizer`: spaces become "▁" in a normalizer (no
  pre-split), whitespace-only tokens are respelled with "▁", and the merges are ordered by
  position in the file (Gemma's scores do not follow its merge order)."""
  tokens = [
    _SPACE * len(t) if " " in t and not t.strip() else t for t in metadata["tokenizer.ggml.tokens"]
  ]
  vocab = {t: i for i, t in enumerate(tokens)}
  merges = _merges(vocab, {t: -i for i, t in enumerate(tokens)})
  unk = "<unk>" if "<unk>" in vocab else None
  bpe = tokenizers.models.BPE(
    vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True, dropout=None
  )
  tok = tokenizers.Tokenizer(bpe)
  tok.normalizer = tokenizers.normalizers.Replace(" ", _SPACE)
  prefix = metadata.get("tokenizer.ggml.add_space_prefix", False)  # Gemma's files say false.
  if prefix:  # "▁" before the first word, as the Metaspace of Llama's SentencePiece vocabularies.
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(_SPACE, "first", split=False)
  else:  # transformers' GemmaTokenizer (a no-op after the normalizer).
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(" ", "merged_with_previous")
  tok.decoder = _spm_decoder(tokenizers, strip=prefix)
  return tok


def _sentencepiece(tokenizers, metadata):
  """transformers' `sentencepiece_tokenizer` + `LlamaTokenizer`: "▁" prepended to the first
  word unless the file's add_space_prefix is false, merges ordered by score."""
  tokens = metadata["tokenizer.ggml.tokens"]
  vocab = {t: i for i, t in enumerate(tokens)}
  scores = metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
  bpe = tokenizers.models.BPE(
    vocab, _merges(vocab, dict(zip(tokens, scores, strict=True))), fuse_unk=True, byte_fallback=True
  )
  tok = tokenizers.Tokenizer(bpe)
  prefix = metadata.get("tokenizer.ggml.add_space_prefix", True)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(
    _SPACE, prepend_scheme="first" if prefix else "never", split=False
  )
  tok.decoder = _spm_decoder(tokenizers, strip=prefix)
  return tok


def _spm_decoder(tokenizers, strip: bool):
  d = tokenizers.decoders
  steps = [d.Replace(_SPACE, " "), d.ByteFallback(), d.Fuse()]
  return d.Sequence(steps + ([d.Strip(" ", 1, 0)] if strip else []))


def _byte_level(tokenizers, metadata):
  """transformers' `byte_level_tokenizer` + `GPT2Tokenizer`, then the file's split regex."""
  alphabet = _bytes_to_unicode()
  letters = set(alphabet.values())
  vocab = {
    t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8")): i
    for i, t in enumerate(metadata["tokenizer.ggml.tokens"])
  }
  merges = [tuple(m.split(" ")) for m in metadata.get("tokenizer.ggml.merges", [])]
  bpe = tokenizers.models.BPE(
    vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
  )
  tok = tokenizers.Tokenizer(bpe)
  pre = tokenizers.pre_tokenizers
  split = _SPLITS.get(metadata.get("tokenizer.ggml.pre"))
  if split is None:
    tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
  else:
    tok.pre_tokenizer = pre.Sequence(
      [
        pre.Split(tokenizers.Regex(split), behavior="isolated"),
        pre.ByteLevel(add_prefix_space=False, use_regex=False),
      ]
    )
  tok.decoder = tokenizers.decoders.ByteLevel()
  return tok


def _add_special_tokens(tokenizers, tok, metadata, byte_level: bool) -> None:
  """transformers' `add_gguf_special_tokens`: control tokens as special added tokens (in a
  byte-level vocabulary, only those spelled in its alphabet), user-defined ones present in the
  vocabulary as plain added tokens. llama.cpp too matches these whole in text."""
  tokens = metadata["tokenizer.ggml.tokens"]
  types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
  letters = set(_bytes_to_unicode().values())
  control = [
    tokenizers.AddedToken(t, normalized=False, special=True)
    for t, kind in zip(tokens, types, strict=True)
    if kind == _CONTROL and (not byte_level or set(t) <= letters)
  ]
  # transformers' tokenizer classes also make its bos/eos/unk/pad tokens special.
  for key in ("bos", "eos", "unknown", "padding"):
    i = metadata.get(f"tokenizer.ggml.{key}_token_id")
    if i is not None and 0 <= i < len(tokens):
      control.append(tokenizers.AddedToken(tokens[i], normalized=False, special=True))
  if control:
    tok.add_special_tokens(control)
  vocab = tok.get_vocab(with_added_tokens=True)
  user = [
    tokenizers.AddedToken(t, normalized=False, special=False)
    for t, kind in zip(tokens, types, strict=True)
    if kind == _USER_DEFINED and t in vocab
  ]
  if user:
    tok.add_tokens(user)


def _merges(vocab: Mapping[str, int], scores: Mapping[str, float]) -> list[tuple[str, str]]:
  """BPE merges implied by a SentencePiece vocabulary: every split of a token into two tokens,
  best score first (ties: longer left piece, then longer right piece, then vocabulary order).

  transformers' `generate_merges` (tokenization_utils_base.py), written out here because
  `tokenizers` derives merges only while training, and jaxsae does not depend on transformers.
  Its stable sort is this one on (key, token number): one token's splits all differ in length.
  """
  merges = []
  for k, (token, score) in enumerate(scores.items()):
    n = len(token)
    for i in range(1, n):
      left = token[:i]
      if left in vocab:
        right = token[i:]
        if right in vocab:
          merges.append((-score, -i, i - n, k, left, right))
  merges.sort()
  return [(m[4], m[5]) for m in merges]


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (convert_slow_tokenizer.bytes_to_unicode)."""
  printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
  table, extra = {}, 0
  for b in range(256):
    if b in printable:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table
