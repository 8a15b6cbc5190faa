"""GGUF files (llama.cpp's container) read into what a Hugging Face folder holds: a config.json
dict and float32 tensors under transformers' `*ForCausalLM` state-dict names and shapes.

llama.cpp's `convert_hf_to_gguf.py` changes a checkpoint on the way in; `read_gguf` undoes it
as transformers' GGUF loader does (`modeling_gguf_pytorch_utils.py`; tests check the two agree,
and for Gemma 1, which transformers does not read, that a converted model comes back):

  - names: `blk.N.attn_q.weight` -> `model.layers.N.self_attn.q_proj.weight`, and so on;
  - Gemma 1/2/3 RMSNorm weights (every `*norm.weight`, q/k norms included) are stored as 1 + w;
  - Llama-architecture q/k rows are permuted (`LlamaModel.permute`); Qwen and Gemma are not;
  - shapes are in ggml's order (fastest dimension first), the reverse of torch's;
  - the config is the GGUF metadata under llama.cpp's key names, with the Hugging Face config
    class defaults (those transformers' loader falls back on) where the file says nothing.

Tensors are dequantized by the `gguf` package (`gguf.quants.dequantize`: every type it knows).
The header is parsed here rather than by `gguf.GGUFReader`, which builds a numpy view per array
element: 12 s for Gemma 3's 262,144-token vocabulary on 2 cores, against 0.3 s here.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import pathlib
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxsae.errors import CheckpointError

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)  # GGUF v1 counted in 32 bits; gguf.GGUFReader reads 2 and 3 too.
_ALIGNMENT = 32  # general.alignment when the file does not set it.
_CHUNK = 1 << 18  # Values dequantized at a time.
# GGUF metadata value types (gguf.GGUFValueType) of a fixed size -> struct format.
_SCALARS = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True))
_STRING, _ARRAY = 8, 9

# GGUF `general.architecture` -> (Hugging Face model_type, architecture class).
_FAMILIES = {
  "llama": ("llama", "LlamaForCausalLM"),
  "qwen2": ("qwen2", "Qwen2ForCausalLM"),
  "qwen3": ("qwen3", "Qwen3ForCausalLM"),
  "gemma": ("gemma", "GemmaForCausalLM"),
  "gemma2": ("gemma2", "Gemma2ForCausalLM"),
  "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
}
SUPPORTED_ARCHITECTURES = tuple(sorted(_FAMILIES))

# ggml tensor names -> transformers' (gguf-py's tensor_mapping.py, one entry per tensor kind).
_TOP = {
  "token_embd": "model.embed_tokens",
  "output_norm": "model.norm",
  "output": "lm_head",
}
_LAYER = {
  "attn_norm": "input_layernorm",
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "attn_q_norm": "self_attn.q_norm",
  "attn_k_norm": "self_attn.k_norm",
  "ffn_norm": "post_attention_layernorm",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
}
# Gemma 2/3 norm both sides of each sublayer: ffn_norm is then the pre-MLP norm.
_SANDWICH = {
  **_LAYER,
  "ffn_norm": "pre_feedforward_layernorm",
  "post_attention_norm": "post_attention_layernorm",
  "post_ffw_norm": "post_feedforward_layernorm",
}
_TENSOR_NAME = re.compile(r"(?:blk\.(\d+)\.)?(\w+)\.(weight|bias)")
# llama.cpp writes Llama 3's rope scaling as this tensor of per-frequency factors.
_ROPE_FREQS = "rope_freqs.weight"


@dataclasses.dataclass(frozen=True)
class GGUFCheckpoint:
  """A GGUF file as a Hugging Face checkpoint.

  config: a config.json-style dict (model_type, architectures and the fields its config class
    reads). tensors: float32 arrays under transformers' state-dict names, [out, in] for linear
    weights; lm_head.weight only if the embeddings are untied. metadata: the file's key/values,
    without the tokenizer's vocabulary arrays (`read_metadata` has those).
  """

  config: dict[str, Any]
  tensors: dict[str, np.ndarray]
  metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _TensorInfo:
  name: str
  dims: tuple[int, ...]  # ggml order: the contiguous dimension first.
  ggml_type: int
  offset: int  # From the start of the file.


def read_metadata(path: str | os.PathLike, *, vocabulary: bool = True) -> dict[str, Any]:
  """The key/values of a GGUF file, without reading its tensors. `vocabulary=False` leaves out
  the `tokenizer.ggml.*` arrays (tokens, scores, token types, merges)."""
  return _read_header(pathlib.Path(path), vocabulary)[0]


def read_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
  """A GGUF file's config, dequantized float32 tensors (Hugging Face names and shapes) and
  metadata; a CheckpointError names what is wrong with a file that cannot be read."""
  path = pathlib.Path(path)
  metadata, infos, lengths = _read_header(path, vocabulary=False)
  arch = metadata.get("general.architecture")
  if arch not in _FAMILIES:
    raise CheckpointError(
      f"{path} holds a GGUF model of architecture {arch!r}, which jaxsae cannot read; supported "
      f"architectures: {', '.join(SUPPORTED_ARCHITECTURES)}. Load the model from its Hugging Face "
      "checkpoint instead"
    )
  names = {info.name for info in infos}
  hf_names = {i.name: _hf_name(i.name, arch) for i in infos if i.name != _ROPE_FREQS}
  unknown = [name for name, hf_name in hf_names.items() if hf_name is None]
  if unknown:
    raise CheckpointError(
      f"{path} holds tensors a {arch} model does not have: {', '.join(unknown[:8])}"
      + (", ..." if len(unknown) > 8 else "")
      + ". Use a GGUF converted from a standard checkpoint of this architecture"
    )
  config = _config(metadata, lengths.get("tokenizer.ggml.tokens"), arch, names, path)
  # A plain view: numpy slices a memmap (an ndarray subclass) 10x slower, and gguf.quants slices
  # in groups of 16 rows.
  data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
  if _ROPE_FREQS in names:
    info = next(i for i in infos if i.name == _ROPE_FREQS)
    config["rope_scaling"] = _llama3_rope_scaling(_dequantize(data, info, path), config, path)
  tensors = {
    hf_names[i.name]: _undo_conversion(_dequantize(data, i, path), i.name, arch, config)
    for i in infos
    if i.name != _ROPE_FREQS
  }
  if "vocab_size" not in config and "model.embed_tokens.weight" in tensors:
    config["vocab_size"] = tensors["model.embed_tokens.weight"].shape[0]
  return GGUFCheckpoint(config=config, tensors=tensors, metadata=metadata)


def _read_header(path: pathlib.Path, vocabulary: bool):
  """(metadata, tensor table, lengths of the arrays left unread), as the GGUF spec (ggml's
  docs/gguf.md) lays them out."""
  if not path.is_file():
    raise CheckpointError(f"no GGUF file at {path}; pass the path of a .gguf file")
  if path.stat().st_size < 24:
    raise CheckpointError(
      f"{path} is not a GGUF file (it has {path.stat().st_size} bytes, fewer than a GGUF "
      "header); pass a .gguf file"
    )
  try:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
      return _parse_header(blob, path, vocabulary)
  except CheckpointError:
    raise
  except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
    raise CheckpointError(
      f"{path} is truncated or corrupt ({e}); download or convert the .gguf file again"
    ) from e


def _parse_header(blob, path: pathlib.Path, vocabulary: bool):
  if blob[:4] != _MAGIC:
    raise CheckpointError(
      f"{path} is not a GGUF file (it starts with {bytes(blob[:4])!r}, not {_MAGIC!r}); pass a "
      ".gguf file, or load a Hugging Face folder with its own loader"
    )
  version, n_tensors, n_values = struct.unpack_from("<IQQ", blob, 4)
  if version not in _VERSIONS:
    endian = " (a big-endian file)" if version & 0xFFFF == 0 else ""
    raise CheckpointError(
      f"{path} is GGUF version {version}{endian}; jaxsae reads little-endian GGUF versions "
      f"{_VERSIONS}. Convert the model again with a current llama.cpp"
    )
  pos, metadata, lengths = 24, {}, {}
  for _ in range(n_values):
    key, pos = _string(blob, pos)
    (kind,) = struct.unpack_from("<I", blob, pos)
    keep = vocabulary or not key.startswith("tokenizer.ggml.")
    value, pos = _value(blob, pos + 4, kind, keep)
    if isinstance(value, _Skipped):
      lengths[key] = int(value)
    else:
      metadata[key] = value
  table = []
  for _ in range(n_tensors):
    name, pos = _string(blob, pos)
    (n_dims,) = struct.unpack_from("<I", blob, pos)
    dims = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
    ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
    pos += 4 + 8 * n_dims + 12
    table.append((name, dims, ggml_type, offset))
  alignment = metadata.get("general.alignment", _ALIGNMENT)
  if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
    raise ValueError(f"general.alignment={alignment!r} is not a power of two")
  start = -(-pos // alignment) * alignment
  infos = [_TensorInfo(n, tuple(d), t, start + o) for n, d, t, o in table]
  return metadata, infos, lengths


class _Skipped(int):
  """A vocabulary array left unread: its length."""


def _string(blob, pos: int) -> tuple[str, int]:
  (n,) = struct.unpack_from("<Q", blob, pos)
  end = pos + 8 + n
  if end > len(blob):
    raise IndexError(f"a string runs past the end of the file at byte {pos}")
  return blob[pos + 8 : end].decode("utf-8"), end


def _value(blob, pos: int, kind: int, keep: bool = True):
  if kind in _SCALARS:
    (value,) = struct.unpack_from("<" + _SCALARS[kind], blob, pos)
    return value, pos + struct.calcsize(_SCALARS[kind])
  if kind == _STRING:
    return _string(blob, pos)
  if kind != _ARRAY:
    raise IndexError(f"unknown GGUF value type {kind} at byte {pos}")
  item, n = struct.unpack_from("<IQ", blob, pos)
  pos += 12
  if item in _SCALARS:
    end = pos + n * struct.calcsize(_SCALARS[item])
    if not keep:
      return _Skipped(n), end
    array = np.frombuffer(blob, np.dtype("<" + _SCALARS[item]), n, pos)
    return array.tolist(), end
  values = []
  for _ in range(n):
    if not keep and item == _STRING:  # Walk the strings without decoding them.
      pos += 8 + struct.unpack_from("<Q", blob, pos)[0]
      continue
    value, pos = _value(blob, pos, item, keep)
    values.append(value)
  return (values if keep else _Skipped(n)), pos


def _shortest(x: Any) -> Any:
  """A float32 metadata value as the shortest decimal that rounds to it: 1e-06, not
  9.999999974752427e-07 (config.json's value, which llama.cpp rounded to float32)."""
  return float(str(np.float32(x))) if isinstance(x, float) else x


def _dequantize(data: np.ndarray, info: _TensorInfo, path: pathlib.Path) -> np.ndarray:
  """One tensor as float32 in torch's dimension order."""
  import gguf

  try:
    qtype = gguf.GGMLQuantizationType(info.ggml_type)
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
  except (ValueError, KeyError) as e:
    raise CheckpointError(
      f"{path}: tensor {info.name} has ggml type {info.ggml_type}, unknown to the installed "
      "gguf package; upgrade it (pip install -U gguf)"
    ) from e
  row, rows = info.dims[0] if info.dims else 1, math.prod(info.dims[1:])
  if row % block:
    raise CheckpointError(
      f"{path}: tensor {info.name} has rows of {row} values, not a multiple of {qtype.name}'s "
      f"block of {block}; the file is corrupt"
    )
  row_bytes = row // block * block_bytes
  if info.offset + rows * row_bytes > data.size:
    raise CheckpointError(
      f"{path} is truncated: tensor {info.name} runs past the end of the file; download or "
      "convert the .gguf file again"
    )
  raw = data[info.offset : info.offset + rows * row_bytes].reshape(rows, row_bytes)
  out = np.empty((rows, row), np.float32)
  # In chunks: gguf.quants holds a whole tensor's blocks twice, and runs 5x faster on a chunk.
  step = max(1, _CHUNK // max(row, 1))
  try:
    for start in range(0, rows, step):
      out[start : start + step] = gguf.quants.dequantize(raw[start : start + step], qtype)
  except NotImplementedError as e:
    raise CheckpointError(
      f"{path}: tensor {info.name} is stored as {qtype.name}, which the gguf package cannot "
      "dequantize; requantize the model to a supported type (e.g. Q8_0, Q4_K_M or F16)"
    ) from e
  return out.reshape(tuple(reversed(info.dims)))


def _hf_name(name: str, arch: str) -> str | None:
  match = _TENSOR_NAME.fullmatch(name)
  if match is None:
    return None
  layer, kind, suffix = match.groups()
  if layer is None:
    base = _TOP.get(kind)
    return None if base is None else f"{base}.{suffix}"
  table = _SANDWICH if arch in ("gemma2", "gemma3") else _LAYER
  if kind not in table:
    return None
  return f"model.layers.{layer}.{table[kind]}.{suffix}"


def _undo_conversion(w: np.ndarray, name: str, arch: str, config: Mapping[str, Any]) -> np.ndarray:
  """Undo what `convert_hf_to_gguf.py` did to one tensor (transformers' TensorProcessors)."""
  if arch.startswith("gemma") and name.endswith("norm.weight"):
    w -= 1.0  # GemmaModel / Gemma2Model / Gemma3Model: data_torch + 1.
  elif arch == "llama" and re.search(r"\.attn_[qk]\.", name):
    heads = config["num_attention_heads" if ".attn_q." in name else "num_key_value_heads"]
    # LlamaModel.permute: reshape(heads, 2, d/2, ...).swapaxes(1, 2); undone by its inverse.
    shape = w.shape
    w = w.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
  return w


def _config(
  metadata: Mapping[str, Any], n_tokens: int | None, arch: str, tensors: set[str], path
) -> dict[str, Any]:
  """config.json from the metadata; what it lacks from the Hugging Face config class defaults."""

  def get(key: str, default: Any = None) -> Any:
    return _shortest(metadata.get(f"{arch}.{key}", default))

  def need(key: str) -> Any:
    value = get(key)
    if value is None:
      raise CheckpointError(
        f"{path} has no {arch}.{key} in its metadata; convert the model again with llama.cpp"
      )
    return value

  model_type, architecture = _FAMILIES[arch]
  gemma = arch.startswith("gemma")
  hidden, heads = need("embedding_length"), need("attention.head_count")
  n_layers = need("block_count")
  config: dict[str, Any] = {
    "architectures": [architecture],
    "model_type": model_type,
    "hidden_size": hidden,
    "intermediate_size": need("feed_forward_length"),
    "num_hidden_layers": n_layers,
    "num_attention_heads": heads,
    "num_key_value_heads": get("attention.head_count_kv", heads),
    "rms_norm_eps": need("attention.layer_norm_rms_epsilon"),
    "tie_word_embeddings": "output.weight" not in tensors,
    "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
    "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
    "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
  }
  if get("vocab_size") or n_tokens:  # Else the embedding's rows (read_gguf).
    config["vocab_size"] = int(get("vocab_size") or n_tokens)
  # The defaults below are those of transformers' config classes (LlamaConfig, Qwen2Config,
  # Qwen3Config, GemmaConfig, Gemma2Config, Gemma3TextConfig), which its GGUF loader keeps.
  default_context = {"llama": 2048, "gemma": 8192, "gemma2": 8192, "gemma3": 131072}
  config["max_position_embeddings"] = get("context_length", default_context.get(arch, 32768))
  config["rope_theta"] = get("rope.freq_base", 1e6 if arch == "gemma3" else 10000.0)
  config["rope_scaling"] = _rope_scaling(metadata, arch)
  if arch in ("llama", "qwen2", "qwen3"):
    config["hidden_act"] = "silu"
    if arch == "qwen2":  # Qwen2Config has neither head_dim (D / H) nor attention_bias (always).
      config["head_dim"] = hidden // heads
    else:
      default = 128 if arch == "qwen3" else get("rope.dimension_count") or hidden // heads
      config["head_dim"] = get("attention.key_length") or default
      config["attention_bias"] = any(n.endswith(".attn_q.bias") for n in tensors)
    if arch == "llama":
      config.update(mlp_bias=False, pretraining_tp=1)
    else:
      config.update(use_sliding_window=False, sliding_window=None)
  if gemma:
    config["head_dim"] = get("attention.key_length", 256)
    config["attention_bias"] = False
    config["hidden_act" if arch == "gemma" else "hidden_activation"] = "gelu_pytorch_tanh"
  if arch in ("gemma2", "gemma3"):
    # llama.cpp (llama-model.cpp) scales queries by 1/sqrt(head_dim), but by 1/sqrt(D / H) for
    # the 27B models, as their config.json do; transformers' default, 256, is wrong for those.
    big = n_layers == (46 if arch == "gemma2" else 62)
    config["query_pre_attn_scalar"] = hidden // heads if big else config["head_dim"]
    config["sliding_window"] = get("attention.sliding_window", 4096)
    softcaps = {"gemma2": (30.0, 50.0), "gemma3": (None, None)}[arch]
    config["final_logit_softcapping"] = get("final_logit_softcapping", softcaps[0])
    config["attn_logit_softcapping"] = get("attn_logit_softcapping", softcaps[1])
    pattern = get("attention.sliding_window_pattern", 2 if arch == "gemma2" else 6)
    if isinstance(pattern, list):  # One flag per layer: true where the layer is sliding.
      sliding = [bool(p) for p in pattern]
    else:
      sliding = [(i + 1) % pattern != 0 for i in range(n_layers)]
      if arch == "gemma3":
        config["sliding_window_pattern"] = pattern
    config["layer_types"] = ["sliding_attention" if s else "full_attention" for s in sliding]
  if arch == "gemma3":
    config["rope_local_base_freq"] = get("rope.freq_base_swa", 10000.0)
  return config


def _rope_scaling(metadata: Mapping[str, Any], arch: str) -> dict[str, Any] | None:
  """{rope.scaling.*} as config.json's rope_scaling; None for none (transformers' loader drops
  these keys, so it would run a Gemma 3 4B+ or a yarn Qwen without its scaling)."""
  kind = metadata.get(f"{arch}.rope.scaling.type")
  if kind in (None, "none"):
    return None
  scaling: dict[str, Any] = {"rope_type": kind}
  factor = _shortest(metadata.get(f"{arch}.rope.scaling.factor"))
  if factor is not None:
    scaling["factor"] = factor
  original = metadata.get(f"{arch}.rope.scaling.original_context_length")
  if original is not None:
    scaling["original_max_position_embeddings"] = original
  return scaling


def _llama3_rope_scaling(freqs: np.ndarray, config: Mapping[str, Any], path) -> dict[str, Any]:
  """Llama 3.1+'s rope_scaling, from the per-frequency factors llama.cpp stores instead of it
  (`LlamaModel.generate_extra_tensors`): the factor is their maximum; the other three
  parameters are those every Llama 3.x uses, checked against the stored factors."""
  head_dim = config["head_dim"]
  factor = float(freqs.max())
  scaling = {
    "rope_type": "llama3",
    "factor": factor,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
  }
  inv = 1.0 / config["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
  wavelen = 2 * math.pi / inv
  low, high = 8192 / 1.0, 8192 / 4.0
  smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
  want = np.where(
    wavelen < high, 1.0, np.where(wavelen > low, factor, 1 / ((1 - smooth) / factor + smooth))
  )
  if freqs.shape != want.shape or not np.allclose(freqs, want, rtol=1e-4):
    raise CheckpointError(
      f"{path} stores rope frequency factors (rope_freqs.weight) that are not Llama 3's rope "
      "scaling; load the model from its Hugging Face checkpoint instead"
    )
  return scaling
