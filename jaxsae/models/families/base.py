"""What every family converter shares: reading config.json fields against the defaults a converter
assumes, and applying a declarative tensor map (Hugging Face name -> parameter path + transform).

A converter handles some config fields and assumes a value for the others it knows could change
the computation; `check_assumed` refuses a config whose such field differs, naming it (penzai's
variants work this way). Fields that cannot change the forward pass (dropout, token ids, cache
flags) are ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxsae.errors import CheckpointError
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, param_shapes

Transform = Callable[[np.ndarray, TransformerConfig], np.ndarray]

# Hugging Face activation names -> TransformerConfig.activation.
ACTIVATIONS = {
  "gelu_new": "gelu",
  "gelu_pytorch_tanh": "gelu",
  "gelu_fast": "gelu",
  "gelu": "gelu_exact",
  "relu": "relu",
  "silu": "silu",
  "swish": "silu",
}


class Problems(list):
  """Collects every reason a checkpoint cannot load, to raise them at once."""

  def raise_if_any(self, source: str, fix: str) -> None:
    if self:
      raise CheckpointError(
        f"{source} describes a model jaxsae cannot run ({len(self)} problem(s)): "
        + "; ".join(self[:12])
        + ("; ..." if len(self) > 12 else "")
        + f". {fix}"
      )


def check_assumed(values: Mapping[str, Any], assumed: Mapping[str, Any], problems: Problems):
  """Every field in `assumed` must be absent, null or equal to the value the converter assumes."""
  for name, want in assumed.items():
    got = values.get(name)
    if got is not None and got != want:
      problems.append(f"{name}={got!r} is not supported (this converter assumes {want!r})")


def positive_int(values: Mapping[str, Any], name: str, problems: Problems) -> int:
  value = values.get(name)
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    problems.append(f"{name}={value!r} must be a positive integer")
    return 1
  return value


def dimensions(values: Mapping[str, Any], problems: Problems, max_len: int) -> dict[str, int]:
  """The sizes every Llama-style config.json names, as TransformerConfig fields (`max_len`:
  the default when max_position_embeddings is absent)."""
  D = positive_int(values, "hidden_size", problems)
  H = positive_int(values, "num_attention_heads", problems)
  kv = values.get("num_key_value_heads") or H
  return {
    "vocab_size": positive_int(values, "vocab_size", problems),
    "d_model": D,
    "n_layers": positive_int(values, "num_hidden_layers", problems),
    "n_heads": H,
    "n_kv_heads": kv if kv != H else 0,
    "d_head": values.get("head_dim") or D // H,
    "d_mlp": values.get("intermediate_size") or 4 * D,
    "max_len": values.get("max_position_embeddings") or max_len,
  }


def activation(values: Mapping[str, Any], problems: Problems, *names: str) -> str:
  """The first of the fields `names` that is set, mapped to our activation name."""
  act = next((values[n] for n in names if values.get(n) is not None), None)
  if act not in ACTIVATIONS:
    problems.append(f"{names[0]}={act!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return "gelu"
  return ACTIVATIONS[act]


def rope(values: Mapping[str, Any], layer_type: str, problems: Problems) -> dict[str, Any]:
  """RoPE parameters of one layer type ("full_attention" / "sliding_attention"), from either
  config.json form: transformers >= 5's `rope_parameters` (flat, or one dict per layer type),
  or the older `rope_theta` / `rope_scaling` / `rope_local_base_freq` / `partial_rotary_factor`
  fields. Returns {theta, type, factor, low_freq_factor, high_freq_factor,
  original_max_position_embeddings, partial_rotary_factor}."""
  params = values.get("rope_parameters")
  if isinstance(params, Mapping) and layer_type in params:
    params = params[layer_type]
  if not isinstance(params, Mapping):
    params = dict(values.get("rope_scaling") or {})
    theta = values.get("rope_theta", 10000.0)
    if layer_type == "sliding_attention" and values.get("rope_local_base_freq") is not None:
      theta, params = values["rope_local_base_freq"], {}  # Gemma 3 scales only full layers.
    params = {**params, "rope_theta": theta}
  out = {
    "theta": float(params.get("rope_theta") or values.get("rope_theta") or 10000.0),
    "type": params.get("rope_type") or params.get("type") or "default",
    "factor": float(params.get("factor") or 1.0),
    "low_freq_factor": float(params.get("low_freq_factor") or 1.0),
    "high_freq_factor": float(params.get("high_freq_factor") or 4.0),
    "original_max_position_embeddings": int(params.get("original_max_position_embeddings") or 8192),
    "partial_rotary_factor": float(
      params.get("partial_rotary_factor")
      or values.get("partial_rotary_factor")
      or values.get("rotary_pct")
      or 1.0
    ),
  }
  if out["type"] not in ("default", "linear", "llama3"):
    problems.append(
      f"rope type {out['type']!r} ({layer_type}) is not supported; supported: default, linear, "
      "llama3"
    )
  return out


def rope_fields(values: Mapping[str, Any], layer_types: tuple[str, ...], problems: Problems):
  """TransformerConfig's rotary fields for a model whose layers have these types."""
  full = rope(values, "full_attention", problems)
  fields = {
    "positions": "rotary",
    "rope_theta": full["theta"],
    "rotary_fraction": full["partial_rotary_factor"],
    "rope_scaling": "none" if full["type"] == "default" else full["type"],
    "rope_scaling_factor": full["factor"],
    "rope_low_freq_factor": full["low_freq_factor"],
    "rope_high_freq_factor": full["high_freq_factor"],
    "rope_original_max_len": full["original_max_position_embeddings"],
  }
  if "sliding" in layer_types:
    local = rope(values, "sliding_attention", problems)
    if local["type"] != "default":
      problems.append(f"rope type {local['type']!r} on sliding layers is not supported")
    if local["theta"] != full["theta"] or full["type"] == "linear":
      fields["rope_local_theta"] = local["theta"]
  return fields


def layer_types(values: Mapping[str, Any], n_layers: int, problems: Problems) -> tuple[str, ...]:
  """("full" | "sliding", ...) per layer from `layer_types`, or () when every layer is full."""
  types = values.get("layer_types")
  if types is None:
    return ()
  names = {"full_attention": "full", "sliding_attention": "sliding"}
  if len(types) != n_layers or any(t not in names for t in types):
    problems.append(
      f"layer_types={types!r} must list full_attention or sliding_attention for each of the "
      f"{n_layers} layers"
    )
    return ()
  out = tuple(names[t] for t in types)
  return () if "sliding" not in out else out


@dataclasses.dataclass(frozen=True)
class TensorRule:
  """One entry of a family's map: the Hugging Face tensor `source` ("{i}" = layer; "a|b" when
  checkpoints name it either way) becomes the parameter at `target` ("/"-joined path,
  "{i}" = layer) after `transform`."""

  source: str
  target: str
  transform: Transform


def linear(w: np.ndarray, cfg: TransformerConfig) -> np.ndarray:
  """torch Linear weight [out, in] -> our kernel [in, out]."""
  return w.T


def same(w: np.ndarray, cfg: TransformerConfig) -> np.ndarray:
  return w


def heads_in(heads: Callable[[TransformerConfig], int]) -> Transform:
  """[heads * d_head, D] -> our (D, heads, d_head) kernel; a bias [heads * d_head] -> (heads, d_head)."""

  def transform(w, cfg):
    if w.ndim == 1:
      return w.reshape(heads(cfg), cfg.d_head)
    return w.T.reshape(cfg.d_model, heads(cfg), cfg.d_head)

  return transform


def heads_out(w: np.ndarray, cfg: TransformerConfig) -> np.ndarray:
  """o_proj [D, H * d_head] -> our (H, d_head, D) kernel."""
  return w.T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)


def query_heads(cfg):
  return cfg.n_heads


def kv_heads(cfg):
  return cfg.kv_heads


def apply_rules(
  tensors: Mapping[str, Any],
  rules: list[TensorRule],
  config: TransformerConfig,
  source: str,
  *,
  prefixes: tuple[str, ...] = (),
  ignored: str = r"$^",
  dtype: Any = jnp.float32,
) -> Any:
  """Our parameter tree (in `dtype`) from a checkpoint's tensors by the family's rules.

  Names may carry any of `prefixes` (stripped); names matching `ignored` (buffers such as
  rotary inv_freq) are skipped. One CheckpointError lists every missing, wrong-shaped, non-float
  or unexpected tensor.
  """
  by_name, original = {}, {}  # Names without the prefix; their spelling in the checkpoint.
  for full_name, value in tensors.items():
    name = next((full_name[len(p) :] for p in prefixes if full_name.startswith(p)), full_name)
    by_name[name], original[name] = value, full_name
  want = {
    k: tuple(s.shape)
    for k, s in traverse_util.flatten_dict(param_shapes(Transformer(config)), sep="/").items()
  }
  problems, used, flat = Problems(), set(), {}
  for rule in rules:
    layers = range(config.n_layers) if "{i}" in rule.source else (None,)
    for i in layers:
      names = rule.source.format(i=i).split("|")
      name = next((n for n in names if n in by_name), names[0])
      target = rule.target.format(i=i)
      if target not in want:
        continue  # A tensor this config does not have (e.g. biases off).
      if name not in by_name:
        problems.append(f"missing tensor {prefixes[0] if prefixes else ''}{name} (for {target})")
        continue
      used.add(name)
      value = by_name[name]
      dtype = np.dtype(value.dtype).name if hasattr(value, "dtype") else "?"
      if dtype not in ("float16", "bfloat16", "float32", "float64"):
        problems.append(f"tensor {original[name]} has dtype {dtype}; expected a float")
        continue
      try:
        array = np.asarray(rule.transform(np.asarray(value, np.float32), config))
      except ValueError as e:
        problems.append(f"tensor {original[name]} of shape {tuple(value.shape)} does not fit: {e}")
        continue
      if tuple(array.shape) != want[target]:
        problems.append(
          f"tensor {original[name]} has shape {tuple(value.shape)}; config.json implies "
          f"{want[target]} for {target}"
        )
        continue
      flat[target] = array
  unexpected = [n for n in sorted(by_name) if n not in used and not re.search(ignored, n)]
  problems += [f"unexpected tensor {original[n]}" for n in unexpected]
  problems += [f"no rule gives {t} (converter bug)" for t in want if t not in flat and not problems]
  if problems:
    raise CheckpointError(
      f"{source} does not match its config.json ({len(problems)} problem(s)): "
      + "; ".join(problems[:12])
      + ("; ..." if len(problems) > 12 else "")
      + ". Use the config.json saved with these weights"
    )
  return traverse_util.unflatten_dict({k: jnp.asarray(v, dtype) for k, v in flat.items()}, sep="/")
