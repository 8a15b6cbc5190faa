"""One small converter per model family: Hugging Face config.json -> `TransformerConfig`, and a
declarative map from checkpoint tensor names to our parameters. `convert` picks the family by
`model_type` (or `architectures`); an unsupported one is refused naming the supported ones.

  gpt2       GPT-2
  llama      Llama 1-3, Mistral, Qwen 2, Qwen 3
  gemma      Gemma 1, 2, 3 (text)
  gpt_neox   GPT-NeoX, Pythia
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import jax.numpy as jnp

from jaxsae.errors import CheckpointError
from jaxsae.models.config import TransformerConfig
from jaxsae.models.families import base, gemma, gpt2, gpt_neox, llama

FAMILIES: tuple[ModuleType, ...] = (gpt2, llama, gemma, gpt_neox)
SUPPORTED = tuple(t for f in FAMILIES for t in f.MODEL_TYPES)
# Parameters above which a model loads in bfloat16 unless float32 is asked for.
BFLOAT16_ABOVE = 2_000_000_000


def family(values: Mapping[str, Any], source: str = "config.json") -> ModuleType:
  """The converter module for a config.json, by model_type, else by architectures."""
  kind = values.get("model_type")
  for f in FAMILIES:
    if kind in f.MODEL_TYPES:
      return f
  archs = values.get("architectures") or []
  for f in FAMILIES:
    if any(a in f.ARCHITECTURES for a in archs):
      return f
  raise CheckpointError(
    f"{source} has model_type={kind!r} (architectures {archs}), which jaxsae cannot run; "
    f"supported model types: {', '.join(SUPPORTED)}"
  )


def parameter_count(cfg: TransformerConfig) -> int:
  """Approximate parameter count (embeddings, attention and MLP matrices)."""
  D, F, V = cfg.d_model, cfg.d_mlp, cfg.vocab_size
  attn = D * cfg.d_head * (2 * cfg.n_heads + 2 * cfg.kv_heads)
  mlp = D * F * (3 if cfg.gated_mlp else 2)
  return cfg.n_layers * (attn + mlp) + V * D * (1 if cfg.tied_embeddings else 2)


def convert(
  values: Mapping[str, Any],
  tensors: Mapping[str, Any],
  source: str = "the checkpoint",
  dtype: str | None = None,
) -> tuple[TransformerConfig, Any]:
  """(config, params) of a Hugging Face checkpoint: its config.json values and its tensors
  (named as in transformers' state dicts). `dtype` None: float32, or bfloat16 for models over
  BFLOAT16_ABOVE parameters."""
  f = family(values)
  cfg = f.config(values)
  if dtype is None:
    dtype = "bfloat16" if parameter_count(cfg) > BFLOAT16_ABOVE else "float32"
  cfg = f.config(values, dtype)
  jdtype = jnp.dtype(dtype)
  if hasattr(f, "params"):
    return cfg, f.params(tensors, cfg, source, jdtype)
  params = base.apply_rules(
    tensors, f.rules(cfg), cfg, source, prefixes=f.PREFIXES, ignored=f.IGNORED, dtype=jdtype
  )
  return cfg, params
