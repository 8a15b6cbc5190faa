"""GPT-2: the default decoder of `jaxsae.models.transformer` (see `jaxsae.models.hf_gpt2`, which
holds its config checks and its fused-qkv tensor mapping)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxsae.models import hf_gpt2
from jaxsae.models.config import TransformerConfig

MODEL_TYPES = ("gpt2",)
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")


def config(values: Mapping[str, Any], dtype: str = "float32") -> TransformerConfig:
  return dataclasses.replace(hf_gpt2.config_from_hf(values), dtype=dtype)


def params(tensors: Mapping[str, Any], cfg: TransformerConfig, source: str, dtype=jnp.float32):
  return jax.tree.map(lambda x: x.astype(dtype), hf_gpt2.params_from_hf(tensors, cfg, source))
