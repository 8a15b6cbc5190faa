"""Hugging Face GPT-2-family checkpoints, read from local disk into our Transformer.

A folder as `save_pretrained` (or the Hub repo openai-community/gpt2) lays it out:

  config.json                      model_type "gpt2" (n_embd, n_layer, n_head, ...)
  model.safetensors                or model.safetensors.index.json + its shards
  vocab.json + merges.txt          or tokenizer.json

GPT-2 is the pre-norm decoder of `jaxsae.models.transformer` (LayerNorm with bias, learned
positions, tanh GELU, tied embeddings), so its weights map one to one: Conv1D weights are stored
(in, out) like our kernels; c_attn's (D, 3D) splits into q | k | v, each reshaped to (D, H, K).
Weights are cast to float32. Nothing is downloaded and nothing is unpickled: a folder holding only
pytorch_model.bin is refused with the command that converts it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.models.config import TransformerConfig
from jaxsae.models.formats.hf_folder import read_weights
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer, param_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
VOCAB_FILES = ("vocab.json", "merges.txt")
TOKENIZER_JSON = "tokenizer.json"
SEPARATOR = "<|endoftext|>"
DEFAULT_REPO = "openai-community/gpt2"

# activation_function -> our TransformerConfig.activation.
_ACTIVATIONS = {
  "gelu_new": "gelu",
  "gelu_pytorch_tanh": "gelu",
  "gelu_fast": "gelu",
  "gelu": "gelu_exact",
  "relu": "relu",
}
# GPT2Config's defaults: save_pretrained may leave fields at their default out of config.json.
_DEFAULTS = {
  "vocab_size": 50257,
  "n_positions": 1024,
  "n_embd": 768,
  "n_layer": 12,
  "n_head": 12,
  "n_inner": None,
  "activation_function": "gelu_new",
  "layer_norm_epsilon": 1e-5,
  "scale_attn_weights": True,
  "scale_attn_by_inverse_layer_idx": False,
  "add_cross_attention": False,
  "tie_word_embeddings": True,
}
# Buffers some checkpoints store beside the weights (the causal mask): not parameters.
_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _config_doc(folder: pathlib.Path) -> Any:
  try:
    return json.loads((folder / CONFIG_FILE).read_text())
  except (OSError, ValueError):
    return None


def is_hf_checkpoint(folder: str | pathlib.Path) -> bool:
  """Whether `folder` has a Hugging Face config.json: a "model_type" and no jaxsae "format"."""
  doc = _config_doc(pathlib.Path(folder))
  return isinstance(doc, dict) and "model_type" in doc and "format" not in doc


def looks_like_hf(folder: str | pathlib.Path) -> bool:
  """An HF config.json, or no jaxsae config.json and a file only a Hugging Face folder holds
  (pickled or sharded weights, a tokenizer)."""
  folder = pathlib.Path(folder)
  doc = _config_doc(folder)
  if isinstance(doc, dict) and "format" in doc:  # jaxsae's own saved model.
    return False
  if isinstance(doc, dict) and "model_type" in doc:
    return True
  names = (*PICKLED_FILES, WEIGHTS_INDEX, *VOCAB_FILES, TOKENIZER_JSON)
  return any((folder / n).is_file() for n in names)


def download_hint(folder: pathlib.Path, repo: str | None = None) -> str:
  """Where to put which files, and how to fetch them on a machine with internet."""
  files = f"{CONFIG_FILE} {WEIGHTS_FILE} {' '.join(VOCAB_FILES)}"
  source = f"the Hugging Face repo {repo}" if repo else "the model's Hugging Face repo"
  command = f"huggingface-cli download {repo or DEFAULT_REPO} {files} --local-dir {folder}"
  return (
    f"put {', '.join(files.split())} from {source} in {folder}; on a machine with internet: "
    f"`{command}`"
    + (
      " (jaxsae never downloads)"
      if repo
      else f" ({DEFAULT_REPO} is GPT-2 small: name your model's repo; jaxsae never downloads)"
    )
  )


def _missing(folder: pathlib.Path) -> tuple[list[str], bool]:
  """The files `folder` lacks, and whether it holds pickled weights instead of safetensors."""
  missing = [] if (folder / CONFIG_FILE).is_file() else [CONFIG_FILE]
  has_weights = (folder / WEIGHTS_FILE).is_file() or (folder / WEIGHTS_INDEX).is_file()
  pickled = not has_weights and any((folder / n).is_file() for n in PICKLED_FILES)
  if not has_weights:
    missing.append(WEIGHTS_FILE)
  has_vocab = all((folder / n).is_file() for n in VOCAB_FILES)
  tokenizer_files = (TOKENIZER_JSON, "tokenizer.model")  # The second: SentencePiece families.
  if not has_vocab and not any((folder / n).is_file() for n in tokenizer_files):
    missing += [n for n in VOCAB_FILES if not (folder / n).is_file()]
  return missing, pickled


def check_folder(folder: str | pathlib.Path, repo: str | None = None, how_else: str = "") -> None:
  """Raise CheckpointError naming every file `folder` lacks and where to get it.

  `repo` names the Hub repo in the hint; `how_else` adds other ways out (e.g. other paths).
  """
  folder = pathlib.Path(folder).expanduser()
  missing, pickled = _missing(folder)
  if not missing:
    return
  where = f"{folder} does not exist" if not folder.is_dir() else f"{folder} lacks {missing}"
  fix = download_hint(folder, repo)
  if pickled:
    where += (
      " (it holds pytorch_model.bin: pickled weights, which jaxsae refuses to load because "
      "unpickling runs arbitrary code)"
    )
    fix = (
      'convert them once on a machine with torch and transformers: `python -c "from '
      "transformers import AutoModelForCausalLM as M; M.from_pretrained('"
      f"{folder}').save_pretrained('{folder}', safe_serialization=True)\"`, or " + fix
    )
  raise CheckpointError(f"no GPT-2 checkpoint: {where}; {fix}{how_else}")


def config_from_hf(values: Mapping[str, Any], source: str = CONFIG_FILE) -> TransformerConfig:
  """Our TransformerConfig for a Hugging Face GPT-2 config.json; every setting this
  Transformer cannot run is rejected at once, in one CheckpointError."""
  v = {**_DEFAULTS, **{k: x for k, x in values.items() if x is not None or k == "n_inner"}}
  p: list[str] = []
  if v.get("model_type") != "gpt2":
    p.append(f"model_type={v.get('model_type')!r}: only GPT-2 checkpoints (model_type 'gpt2') load")
  if v["scale_attn_by_inverse_layer_idx"]:
    p.append("scale_attn_by_inverse_layer_idx=true: attention scaled by 1/(layer+1) is unsupported")
  if not v["scale_attn_weights"]:
    p.append("scale_attn_weights=false: attention without the 1/sqrt(d_head) scale is unsupported")
  if v["add_cross_attention"]:
    p.append("add_cross_attention=true: cross-attention (encoder-decoder) is unsupported")
  act = v["activation_function"]
  if act not in _ACTIVATIONS:
    p.append(f"activation_function={act!r} is unsupported; supported: {sorted(_ACTIVATIONS)}")
  ints = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
  for name in ints + (("n_inner",) if v["n_inner"] is not None else ()):
    if not isinstance(v[name], int) or isinstance(v[name], bool) or v[name] < 1:
      p.append(f"{name}={v[name]!r} must be a positive integer")
  if not any(q.startswith(("n_embd=", "n_head=")) for q in p) and v["n_embd"] % v["n_head"]:
    p.append(f"n_embd={v['n_embd']} is not divisible by n_head={v['n_head']}")
  eps = v["layer_norm_epsilon"]
  if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
    p.append(f"layer_norm_epsilon={eps!r} must be a positive number")
  if p:
    raise CheckpointError(
      f"{source} describes a model jaxsae cannot run ({len(p)} problem(s)): "
      + "; ".join(p)
      + ". Use a GPT-2 checkpoint with standard attention (scaled by 1/sqrt(d_head), no "
      "cross-attention) and a GELU or ReLU MLP, or convert the model to jaxsae's own format "
      "(jaxsae.models.pretrained.save)"
    )
  return TransformerConfig(
    vocab_size=v["vocab_size"],
    d_model=v["n_embd"],
    n_layers=v["n_layer"],
    n_heads=v["n_head"],
    d_head=v["n_embd"] // v["n_head"],
    d_mlp=v["n_inner"] if v["n_inner"] is not None else 4 * v["n_embd"],
    max_len=v["n_positions"],
    norm="layernorm",
    norm_eps=float(eps),
    positions="learned",
    activation=_ACTIVATIONS[act],
    tied_embeddings=bool(v["tie_word_embeddings"]),
    use_bias=True,
  )


def _hf_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
  """The tensors a GPT-2 checkpoint with this config holds (names without "transformer.")."""
  D, F, V = config.d_model, config.d_mlp, config.vocab_size
  shapes = {"wte.weight": (V, D), "wpe.weight": (config.max_len, D)}
  for i in range(config.n_layers):
    for norm in ("ln_1", "ln_2"):
      shapes |= {f"h.{i}.{norm}.weight": (D,), f"h.{i}.{norm}.bias": (D,)}
    shapes |= {
      f"h.{i}.attn.c_attn.weight": (D, 3 * D),
      f"h.{i}.attn.c_attn.bias": (3 * D,),
      f"h.{i}.attn.c_proj.weight": (D, D),
      f"h.{i}.attn.c_proj.bias": (D,),
      f"h.{i}.mlp.c_fc.weight": (D, F),
      f"h.{i}.mlp.c_fc.bias": (F,),
      f"h.{i}.mlp.c_proj.weight": (F, D),
      f"h.{i}.mlp.c_proj.bias": (D,),
    }
  shapes |= {"ln_f.weight": (D,), "ln_f.bias": (D,)}
  if not config.tied_embeddings:
    shapes["lm_head.weight"] = (V, D)
  return shapes


def _strip(name: str) -> str:
  return name.removeprefix("transformer.")


def params_from_hf(
  tensors: Mapping[str, Any], config: TransformerConfig, source: str = "the checkpoint"
) -> Any:
  """Our parameter tree (float32 jax arrays) from a GPT-2 checkpoint's tensors.

  Keys may carry the "transformer." prefix (GPT2LMHeadModel) or not (GPT2Model); the attention
  mask buffers are ignored, as are other heads' tensors. Values need `.shape`, `.dtype` and
  conversion by `np.asarray`. One CheckpointError lists every missing, wrong-shaped, non-float
  or unexpected block tensor.
  """
  by_name = {_strip(k): v for k, v in tensors.items()}
  expected = _hf_shapes(config)
  p = [f"missing tensor {k} {expected[k]}" for k in expected if k not in by_name]
  for k in expected:
    if k not in by_name:
      continue
    shape, dtype = tuple(by_name[k].shape), np.dtype(by_name[k].dtype).name
    if shape != expected[k]:
      p.append(f"tensor {k} has shape {shape}, config.json implies {expected[k]}")
    if dtype not in _FLOATS:
      p.append(f"tensor {k} has dtype {dtype}; expected a float (quantized weights do not load)")
  body = re.compile(r"^(h\.\d+\.|wte\.|wpe\.|ln_f\.)")
  p += [
    f"unexpected tensor {k} (config.json has n_layer={config.n_layers})"
    for k in sorted(by_name)
    if body.match(k) and k not in expected and not _BUFFER.match(k)
  ]
  if p:
    raise CheckpointError(
      f"{source} does not match its config.json ({len(p)} problem(s)): "
      + "; ".join(p[:12])
      + ("; ..." if len(p) > 12 else "")
      + ". Use the config.json saved with these weights"
    )

  def get(name):
    return np.asarray(by_name[name]).astype(np.float32)

  D, H, K = config.d_model, config.n_heads, config.d_head

  def norm(name):
    return {"scale": get(f"{name}.weight"), "bias": get(f"{name}.bias")}

  def dense(name):
    return {"kernel": get(f"{name}.weight"), "bias": get(f"{name}.bias")}

  params: dict[str, Any] = {
    "embed": {"embedding": get("wte.weight")},
    "pos_embed": get("wpe.weight"),
  }
  for i in range(config.n_layers):
    h = f"h.{i}"
    qkv_w, qkv_b = get(f"{h}.attn.c_attn.weight"), get(f"{h}.attn.c_attn.bias")
    attn = {
      name: {
        "kernel": qkv_w[:, j * D : (j + 1) * D].reshape(D, H, K),
        "bias": qkv_b[j * D : (j + 1) * D].reshape(H, K),
      }
      for j, name in enumerate(("query", "key", "value"))
    }
    attn["out"] = {
      "kernel": get(f"{h}.attn.c_proj.weight").reshape(H, K, D),
      "bias": get(f"{h}.attn.c_proj.bias"),
    }
    params[f"blocks_{i}"] = {
      "attn_norm": norm(f"{h}.ln_1"),
      "attn": attn,
      "mlp_norm": norm(f"{h}.ln_2"),
      "mlp": {"fc_in": dense(f"{h}.mlp.c_fc"), "fc_out": dense(f"{h}.mlp.c_proj")},
    }
  params["final_norm"] = norm("ln_f")
  if not config.tied_embeddings:
    params["unembed"] = {"kernel": get("lm_head.weight").T}
  _check_tree(params, config)
  return traverse_util.unflatten_dict(
    {k: jnp.asarray(x) for k, x in traverse_util.flatten_dict(params).items()}
  )


def _check_tree(params: Any, config: TransformerConfig) -> None:
  """The mapped tree has exactly the Transformer's parameter paths and shapes."""
  want = {
    k: tuple(s.shape)
    for k, s in traverse_util.flatten_dict(param_shapes(Transformer(config))).items()
  }
  got = {k: tuple(x.shape) for k, x in traverse_util.flatten_dict(params).items()}
  if want != got:  # A mapping bug, not a user error.
    raise AssertionError(f"GPT-2 mapping mismatch: {sorted(set(want) ^ set(got))} {want} {got}")


def load_gpt2(folder: str | pathlib.Path, repo: str | None = None, how_else: str = ""):
  """A `LanguageModel` from a local Hugging Face GPT-2 folder (see the module docstring).

  `repo` and `how_else` only shape the error raised when files are missing.
  """
  from jaxsae.text.tokenizer import BPETokenizer

  folder = pathlib.Path(folder).expanduser()
  check_folder(folder, repo, how_else)
  config_file = folder / CONFIG_FILE
  try:
    values = json.loads(config_file.read_text())
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{config_file} is not readable JSON ({e}); download it again") from e
  if not isinstance(values, dict):
    raise CheckpointError(f"{config_file} is not a JSON object; download it again")
  config = config_from_hf(values, str(config_file))
  try:
    tokenizer = BPETokenizer(folder, SEPARATOR)
  except JaxsaeError as e:
    raise CheckpointError(f"cannot load the tokenizer in {folder}: {e}") from e
  except Exception as e:  # tokenizers raises its own exception type on malformed files.
    raise CheckpointError(
      f"cannot load the tokenizer in {folder} ({e}); download vocab.json and merges.txt again"
    ) from e
  if tokenizer.vocab_size > config.vocab_size:
    raise CheckpointError(
      f"the tokenizer in {folder} has {tokenizer.vocab_size} tokens but {config_file} "
      f"vocab_size={config.vocab_size}; use the tokenizer files saved with this model"
    )
  tensors, source = read_weights(folder)
  params = params_from_hf(tensors, config, source)
  metadata = {
    "source": "huggingface",
    "path": str(folder),
    "model_type": values.get("model_type"),
    "name_or_path": values.get("_name_or_path", os.path.basename(folder)),
  }
  return LanguageModel(config, params, tokenizer, metadata)
