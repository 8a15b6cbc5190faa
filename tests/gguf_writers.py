"""Tiny GGUF files written llama.cpp's way, for tests/test_gguf.py: random transformers models
of each architecture converted as convert_hf_to_gguf.py does (metadata keys, tensor names,
Gemma's norms + 1, Llama's permuted q/k rows, quantized, F16 and F32 tensors), and the
byte-level and SentencePiece vocabularies they carry."""

import json
import math

import gguf
import numpy as np
import tokenizers
import torch
import transformers

from jaxsae.text import corpus as corpus_lib

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


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
