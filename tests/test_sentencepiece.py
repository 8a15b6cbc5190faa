"""SentencePiece tokenizer.model files, rebuilt with `tokenizers`: token ids equal to the
`sentencepiece` library's own encoder on models trained by it, Llama-style (a "▁" before the
first word) and Gemma-style (none); Hugging Face folders that ship only a tokenizer.model load;
what cannot be rebuilt is refused with the fix."""

import inspect
import json

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

from jaxsae.errors import CheckpointError
from jaxsae.models import pretrained
from jaxsae.text.corpus import stdlib_root
from jaxsae.text.sentencepiece_model import read_sentencepiece
from jaxsae.text.tokenizer import load_tokenizer

VOCAB = 700
TEXTS = (
  "naïve café — 日本語, ünïcödé and emoji 🙂🚀👩‍👩‍👧 ẞ ﬁ Ω",
  "   leading    runs of   spaces\t\ttabs \n\n\n  and trailing   ",
  "def f(x, y):\n\tif x:\n\t\treturn [x, y]  # pairs\n\n\n\nclass A:\n    pass\n",
  "a\r\nb\u00a0c\u2003d 1234567 3.14159 x==y!=z <think>html</think>",
)


def train(tmp_path, name: str, **options) -> str:
  """A BPE model trained by sentencepiece on two stdlib files, as LLM tokenizers are built:
  identity normalization, whitespace kept, byte fallback, a user-defined and a control piece."""
  root = stdlib_root()
  text = tmp_path / "train.txt"
  text.write_text(
    "".join((root / n).read_text(encoding="utf-8") for n in ("textwrap.py", "shlex.py"))
  )
  settings = dict(
    input=str(text),
    model_prefix=str(tmp_path / name),
    vocab_size=VOCAB,
    model_type="bpe",
    byte_fallback=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    user_defined_symbols=["<think>"],
    control_symbols=["<ctl>"],
    minloglevel=2,
  )
  spm.SentencePieceTrainer.train(**(settings | options))
  return str(tmp_path / f"{name}.model")


def samples() -> list[str]:
  source = inspect.getsource(json.decoder)
  return [source[:2000], source[3000:5000], *TEXTS]


@pytest.mark.parametrize("prefix", [True, False], ids=["llama", "gemma"])
def test_ids_equal_sentencepiece_itself(tmp_path, prefix):
  path = train(tmp_path, "spm", add_dummy_prefix=prefix)
  theirs = spm.SentencePieceProcessor(model_file=path)
  ours = load_tokenizer(f"spm:{path}")
  assert ours.vocab_size == theirs.vocab_size() == VOCAB
  assert ours.separator_id == theirs.bos_id() == 1  # <s> begins documents.
  for text in samples():
    ids = ours.encode(text)
    assert ids.tolist() == theirs.encode(text), text
    assert ours.decode(ids) == theirs.decode(ids.tolist()) == text
    assert ours.token_byte_lengths()[ids].sum() == len(text.encode("utf-8")) + prefix
  think = theirs.piece_to_id("<think>")  # User-defined pieces are matched whole, as spm does.
  assert ours.encode("a<think>b").tolist() == theirs.encode("a<think>b")
  assert ours.encode("<think>").tolist() == [559, think][1 - prefix :]
  first = ours.encode("if x:")[0]
  assert ours.token_str(first).startswith(" ") == prefix
  reloaded = load_tokenizer(ours.spec())  # The spec round-trips (stores record it).
  assert reloaded.encode(TEXTS[0]).tolist() == ours.encode(TEXTS[0]).tolist()
  assert load_tokenizer(f"spm:{path}:</s>").separator_id == theirs.eos_id()


def test_a_folder_with_only_tokenizer_model_loads(tmp_path):
  folder = tmp_path / "llama"
  folder.mkdir()
  config = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    bos_token_id=1,
    eos_token_id=2,
  )
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
  model.save_pretrained(folder)
  (folder / "tokenizer.model").write_bytes(open(train(tmp_path, "spm"), "rb").read())
  assert not (folder / "tokenizer.json").exists()

  lm = pretrained.load(folder, dtype="float32")
  theirs = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
  text = samples()[0][:300]
  ids = lm.encode(text)
  assert ids.tolist() == [theirs.bos_id(), *theirs.encode(text)]
  with torch.no_grad():
    expected = model(torch.tensor(ids[None].astype(np.int64))).logits.numpy()
  logits, _ = lm.run(ids[None])
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4)


def test_what_cannot_be_rebuilt_is_refused_with_the_fix(tmp_path):
  with pytest.raises(CheckpointError, match="no SentencePiece model at .*; pass the path"):
    load_tokenizer(f"spm:{tmp_path / 'missing.model'}")
  (tmp_path / "bad.model").write_bytes(b"\xff\xfe this is not a protocol buffer \x00\x01")
  with pytest.raises(CheckpointError, match="bad.model is not a SentencePiece model"):
    read_sentencepiece(tmp_path / "bad.model")
  unigram = train(tmp_path, "uni", model_type="unigram")
  with pytest.raises(CheckpointError, match="UNIGRAM model; jaxsae rebuilds BPE.*save_pretrained"):
    load_tokenizer(f"spm:{unigram}")
  nfkc = train(tmp_path, "nfkc", normalization_rule_name="nmt_nfkc")
  with pytest.raises(CheckpointError, match="normalizes its text \\(nmt_nfkc.*save_pretrained"):
    load_tokenizer(f"spm:{nfkc}")
  folder = tmp_path / "empty"
  folder.mkdir()
  (folder / "config.json").write_text('{"model_type": "llama"}')
  from jaxsae.models.formats import hf_folder

  with pytest.raises(CheckpointError, match="no tokenizer.json or tokenizer.model"):
    hf_folder.tokenizer(folder, {})
