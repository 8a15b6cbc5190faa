"""Tokenizers: bytes by default, or a trained BPE file.

Every tokenizer has one document separator token, written before each document when
documents are packed into sequences (it doubles as BOS when sampling). `token_byte_lengths`
gives the UTF-8 bytes each token stands for, so losses convert to bits per byte whatever the
tokenizer.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
from typing import Protocol

import numpy as np

from jaxsae.errors import JaxsaeError

SEPARATOR = "<|sep|>"
_SPM_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # A SentencePiece byte-fallback token.
# Separator names tried, in order, in a BPE vocabulary that does not name one.
_BPE_SEPARATORS = ("<|sep|>", "<|endoftext|>", "</s>", "<|end|>", "<eos>")


class Tokenizer(Protocol):
  """What the pipeline, the models and the evaluations need from a tokenizer."""

  vocab_size: int
  separator_id: int

  def encode(self, text: str | bytes) -> np.ndarray:
    """Token ids (int32) of one document, without separators."""
    ...

  def encode_many(self, docs: list[bytes]) -> list[np.ndarray]:
    """Token ids of many documents; may run in parallel."""
    ...

  def decode(self, ids) -> str:
    """Text of a sequence of ids; separators become `SEPARATOR`."""
    ...

  def token_str(self, token_id: int) -> str:
    """A printable form of one token, for feature browsers and tables."""
    ...

  def token_byte_lengths(self) -> np.ndarray:
    """(vocab_size,) int32: the UTF-8 bytes each token stands for; 0 for special tokens."""
    ...

  def spec(self) -> str:
    """The string `load_tokenizer` takes to rebuild this tokenizer."""
    ...


class ByteTokenizer:
  """UTF-8 bytes 0..255 as tokens, plus the separator as token 256.

  Needs no training and no files; quotes, brackets and every ASCII character are one token.
  """

  vocab_size = 257
  separator_id = 256

  def encode(self, text: str | bytes) -> np.ndarray:
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

  def encode_many(self, docs: list[bytes]) -> list[np.ndarray]:
    return [self.encode(d) for d in docs]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    out, run = [], bytearray()
    for i in ids:
      if i == self.separator_id:
        out.append(run.decode("utf-8", errors="replace") + SEPARATOR)
        run = bytearray()
      elif 0 <= i < 256:
        run.append(i)
      else:
        raise JaxsaeError(f"token id {i} is outside the byte tokenizer's vocabulary [0, 257)")
    out.append(run.decode("utf-8", errors="replace"))
    return "".join(out)

  def token_str(self, token_id: int) -> str:
    if token_id == self.separator_id:
      return SEPARATOR
    char = bytes([token_id]).decode("latin-1")
    return char if char.isprintable() or char == " " else repr(char)[1:-1]

  def token_byte_lengths(self) -> np.ndarray:
    lengths = np.ones(self.vocab_size, np.int32)
    lengths[self.separator_id] = 0
    return lengths

  def spec(self) -> str:
    return "bytes"


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's reversible map from printable unicode characters back to bytes."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD))
  printable += list(range(0xAE, 0x100))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


class BPETokenizer:
  """A trained BPE from Hugging Face `tokenizers`: a `tokenizer.json` file, or a folder with
  `tokenizer.json` or GPT-2's `vocab.json` + `merges.txt`. Read from local disk only."""

  def __init__(self, path: str | pathlib.Path, separator: str | None = None):
    try:
      import tokenizers
    except ImportError as e:
      raise JaxsaeError(
        "BPE tokenizers need the `tokenizers` package: pip install 'jaxsae[bpe]'"
      ) from e
    self._path = pathlib.Path(path)
    self._spec, self._byte_level, self._prefix = None, True, ""
    self._wrap(_load_hf_tokenizer(tokenizers, self._path), separator, self._path)

  @classmethod
  def from_tokenizer(
    cls, tok, separator: str, spec: str, *, byte_level: bool = True, prefix: str = ""
  ) -> BPETokenizer:
    """Wraps an in-memory `tokenizers.Tokenizer` whose document separator is the token named
    `separator`; `spec()` returns `spec`. `byte_level=False` for SentencePiece-style
    vocabularies ("▁" for spaces, "<0xNN>" byte tokens). `prefix` is written before every text
    encoded: SentencePiece's dummy-prefix space, which it adds even before a leading space
    (`tokenizers`' Metaspace does not); the decoder must strip it."""
    self = cls.__new__(cls)
    self._path, self._spec, self._byte_level, self._prefix = None, spec, byte_level, prefix
    self._wrap(tok, separator, spec)
    return self

  def _wrap(self, tok, separator: str | None, source) -> None:
    self._tok = tok
    vocab = self._tok.get_vocab(with_added_tokens=True)
    self.vocab_size = max(vocab.values()) + 1
    names = (separator,) if separator else _BPE_SEPARATORS
    found = [n for n in names if n in vocab]
    if not found:
      raise JaxsaeError(
        f"BPE tokenizer {source} has none of the separator tokens {list(names)}; "
        "train it with one as a special token or pass its name as `separator`"
      )
    self._separator = found[0]
    self.separator_id = vocab[self._separator]
    added = self._tok.get_added_tokens_decoder()
    self._special = {i for i, t in added.items() if t.special} | {self.separator_id}
    self._byte_lengths = None

  def encode(self, text: str | bytes) -> np.ndarray:
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    return np.asarray(self._tok.encode(self._prefix + text, add_special_tokens=False).ids, np.int32)

  def encode_many(self, docs: list[bytes]) -> list[np.ndarray]:
    texts = [self._prefix + d.decode("utf-8", errors="replace") for d in docs]
    encodings = self._tok.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    pieces, run = [], []
    for i in ids:
      if i == self.separator_id:
        pieces.append(self._tok.decode(run, skip_special_tokens=False) + SEPARATOR)
        run = []
      else:
        run.append(i)
    pieces.append(self._tok.decode(run, skip_special_tokens=False))
    return "".join(pieces)

  def token_str(self, token_id: int) -> str:
    token = self._tok.id_to_token(token_id)
    if token is None:
      return f"<unused {token_id}>"
    if not self._byte_level:
      return token if token_id in self._special else _spm_text(token)
    alphabet = _byte_level_alphabet()
    if token_id not in self._special and all(c in alphabet for c in token):
      return bytes(alphabet[c] for c in token).decode("utf-8", errors="replace")
    return token

  def token_byte_lengths(self) -> np.ndarray:
    if self._byte_lengths is None:
      self._byte_lengths = self._compute_byte_lengths()
    return self._byte_lengths

  def _compute_byte_lengths(self) -> np.ndarray:
    alphabet = _byte_level_alphabet()
    lengths = np.zeros(self.vocab_size, np.int32)
    for token, i in self._tok.get_vocab(with_added_tokens=True).items():
      if i in self._special:
        continue
      if not self._byte_level:
        lengths[i] = 1 if _SPM_BYTE.fullmatch(token) else len(token.replace("\u2581", " ").encode())
      elif all(c in alphabet for c in token):  # byte-level BPE: one char per byte.
        lengths[i] = len(token)
      else:
        lengths[i] = len(self._tok.decode([i]).encode("utf-8"))
    return lengths

  def spec(self) -> str:
    return self._spec or f"bpe:{self._path}:{self._separator}"


def _spm_text(token: str) -> str:
  """A SentencePiece token's text: "▁" is a space, "<0x0A>" an ASCII byte."""
  if _SPM_BYTE.fullmatch(token) and int(token[3:5], 16) < 0x80:
    char = chr(int(token[3:5], 16))
    return char if char.isprintable() or char == " " else repr(char)[1:-1]
  return token.replace("\u2581", " ")


def _load_hf_tokenizer(tokenizers, path: pathlib.Path):
  if path.is_file():
    return tokenizers.Tokenizer.from_file(str(path))
  if (path / "tokenizer.json").is_file():
    return tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
  if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
    model = tokenizers.models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    with open(path / "vocab.json", encoding="utf-8") as f:
      vocab = json.load(f)
    specials = [t for t in vocab if t.startswith("<|") and t.endswith("|>")]
    tok.add_special_tokens(specials)
    return tok
  raise JaxsaeError(
    f"no BPE tokenizer at {path}: expected a tokenizer.json file, or a folder holding "
    "tokenizer.json or vocab.json + merges.txt"
  )


def load_tokenizer(spec: str) -> Tokenizer:
  """`"bytes"`, or `"bpe:PATH"` / `"bpe:PATH:SEPARATOR"`, or a bare path to a BPE file/folder,
  or `"gguf:PATH"`: the tokenizer a GGUF file describes, or `"spm:PATH"` / `"spm:PATH:SEPARATOR"`:
  a SentencePiece tokenizer.model."""
  if spec == "bytes":
    return ByteTokenizer()
  if spec.startswith("gguf:"):
    from jaxsae.text.gguf_tokenizer import load_gguf_tokenizer

    return load_gguf_tokenizer(spec[len("gguf:") :])
  if spec.startswith("spm:"):
    from jaxsae.text.sentencepiece_model import load_sentencepiece_tokenizer

    path, _, separator = spec[len("spm:") :].partition(":")
    return load_sentencepiece_tokenizer(path, separator or None)
  if spec.startswith("bpe:"):
    path, _, separator = spec[len("bpe:") :].partition(":")
    return BPETokenizer(path, separator or None)
  if pathlib.Path(spec).exists():
    return BPETokenizer(spec)
  raise JaxsaeError(
    f'unknown tokenizer "{spec}": use "bytes" or "bpe:/path/to/tokenizer.json" '
    '(a file or folder saved by Hugging Face tokenizers), "gguf:/path/to/model.gguf" or '
    '"spm:/path/to/tokenizer.model"'
  )
