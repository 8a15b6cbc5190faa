"""Tokenizers: byte round trips, single-token punctuation, BPE files from `tokenizers`."""

import json

import numpy as np
import pytest
import tokenizers

from jaxsae.errors import JaxsaeError
from jaxsae.text.corpus import stdlib_root
from jaxsae.text.tokenizer import SEPARATOR, BPETokenizer, ByteTokenizer, load_tokenizer

TEXT = 'def f(x: "str") -> list[dict]:\n    return [{"é": x}]  # ünïcödé ✓\n'


def test_bytes_round_trip_and_single_token_punctuation():
  tok = load_tokenizer("bytes")
  ids = tok.encode(TEXT)
  assert tok.decode(ids) == TEXT
  assert len(ids) == len(TEXT.encode("utf-8"))
  for ch in "'\"()[]{}:,.#":
    assert len(tok.encode(ch)) == 1
  assert tok.token_byte_lengths()[ids].sum() == len(TEXT.encode("utf-8"))


def test_bytes_separator_decodes_to_marker():
  tok = ByteTokenizer()
  ids = np.concatenate([[tok.separator_id], tok.encode("a"), [tok.separator_id], tok.encode("b")])
  assert tok.decode(ids) == f"{SEPARATOR}a{SEPARATOR}b"
  assert tok.token_byte_lengths()[tok.separator_id] == 0
  with pytest.raises(JaxsaeError, match="outside"):
    tok.decode([300])


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
  """A byte-level BPE trained here on real stdlib files, saved as tokenizer.json."""
  files = sorted(str(p) for p in (stdlib_root() / "json").glob("*.py"))
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=["<|endoftext|>"],
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train(files, trainer)
  path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
  tok.save(str(path))
  return path


def test_bpe_file_round_trip_and_byte_lengths(bpe_file):
  tok = load_tokenizer(f"bpe:{bpe_file}")
  assert isinstance(tok, BPETokenizer)
  assert tok.separator_id == json.loads(bpe_file.read_text())["added_tokens"][0]["id"]
  ids = tok.encode(TEXT)
  assert tok.decode(ids) == TEXT
  assert len(ids) < len(TEXT.encode("utf-8"))  # Merges happened.
  assert tok.token_byte_lengths()[ids].sum() == len(TEXT.encode("utf-8"))
  assert tok.token_byte_lengths()[tok.separator_id] == 0
  many = tok.encode_many([TEXT.encode(), b"x = 1\n"])
  np.testing.assert_array_equal(many[0], ids)
  assert load_tokenizer(tok.spec()).encode(TEXT).tolist() == ids.tolist()


def test_bpe_from_vocab_and_merges_folder(bpe_file, tmp_path):
  model = json.loads(bpe_file.read_text())["model"]
  (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]))
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  from_file = load_tokenizer(f"bpe:{bpe_file}")
  from_folder = BPETokenizer(tmp_path)
  assert from_folder.encode(TEXT).tolist() == from_file.encode(TEXT).tolist()
  assert from_folder.decode(from_folder.encode(TEXT)) == TEXT


def test_bad_tokenizer_specs_name_the_fix(tmp_path):
  with pytest.raises(JaxsaeError, match='use "bytes"'):
    load_tokenizer("wordpiece")
  with pytest.raises(JaxsaeError, match="tokenizer.json"):
    BPETokenizer(tmp_path)
