"""GPT-NeoX (Pythia): LayerNorm with biases, partial rotary positions (the first rotary_pct of
each head), exact GELU, untied embeddings, and parallel attention + MLP blocks
(`use_parallel_residual`, sequential when false). The fused query_key_value weight is laid out
per head as [H, 3, d_head] rows. Tensor names as in transformers' `GPTNeoXForCausalLM`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxsae.models.config import TransformerConfig
from jaxsae.models.families import base
from jaxsae.models.families.base import TensorRule as R

MODEL_TYPES = ("gpt_neox",)
ARCHITECTURES = ("GPTNeoXForCausalLM",)

ASSUMED = {"attention_bias": True}


def config(values: Mapping[str, Any], dtype: str = "float32") -> TransformerConfig:
  """TransformerConfig from a GPT-NeoX config.json."""
  p = base.Problems()
  base.check_assumed(values, ASSUMED, p)
  dims = base.dimensions(values, p, max_len=2048)
  fields = base.rope_fields(values, (), p)
  act = base.activation(values, p, "hidden_act")
  p.raise_if_any("config.json", "Use a standard GPT-NeoX / Pythia checkpoint")
  return TransformerConfig(
    **dims,
    norm="layernorm",
    norm_eps=float(values.get("layer_norm_eps") or 1e-5),
    activation=act,
    parallel_block=bool(values.get("use_parallel_residual", True)),
    use_bias=True,
    tied_embeddings=bool(values.get("tie_word_embeddings", False)),
    dtype=dtype,
    **fields,
  )


def _qkv(part: int, bias: bool):
  """Row block `part` (0 q, 1 k, 2 v) of the fused [H * 3 * K, D] weight (or [H * 3 * K] bias)."""

  def transform(w: np.ndarray, cfg: TransformerConfig) -> np.ndarray:
    H, K, D = cfg.n_heads, cfg.d_head, cfg.d_model
    if bias:
      return w.reshape(H, 3, K)[:, part]
    return w.reshape(H, 3, K, D)[:, part].transpose(2, 0, 1)

  return transform


def rules(cfg: TransformerConfig) -> list[base.TensorRule]:
  """transformers' tensor names -> our parameter paths."""
  layer = "layers.{i}."
  out = [R("embed_in.weight", "embed/embedding", base.same)]
  for part, target in enumerate(("query", "key", "value")):
    out.append(
      R(
        layer + "attention.query_key_value.weight",
        f"blocks_{{i}}/attn/{target}/kernel",
        _qkv(part, False),
      )
    )
    out.append(
      R(
        layer + "attention.query_key_value.bias",
        f"blocks_{{i}}/attn/{target}/bias",
        _qkv(part, True),
      )
    )
  for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
    out.append(R(f"{layer}{theirs}.weight", f"blocks_{{i}}/{ours}/scale", base.same))
    out.append(R(f"{layer}{theirs}.bias", f"blocks_{{i}}/{ours}/bias", base.same))
  out += [
    R(layer + "attention.dense.weight", "blocks_{i}/attn/out/kernel", base.heads_out),
    R(layer + "attention.dense.bias", "blocks_{i}/attn/out/bias", base.same),
    R(layer + "mlp.dense_h_to_4h.weight", "blocks_{i}/mlp/fc_in/kernel", base.linear),
    R(layer + "mlp.dense_h_to_4h.bias", "blocks_{i}/mlp/fc_in/bias", base.same),
    R(layer + "mlp.dense_4h_to_h.weight", "blocks_{i}/mlp/fc_out/kernel", base.linear),
    R(layer + "mlp.dense_4h_to_h.bias", "blocks_{i}/mlp/fc_out/bias", base.same),
    R("final_layer_norm.weight", "final_norm/scale", base.same),
    R("final_layer_norm.bias", "final_norm/bias", base.same),
    # transformers >= 5 renames embed_out to lm_head; checkpoints on the Hub keep embed_out.
    R("embed_out.weight|lm_head.weight", "unembed/kernel", base.linear),
  ]
  return out


PREFIXES = ("gpt_neox.",)
IGNORED = r"rotary_emb\.inv_freq$|attention\.(bias|masked_bias)$"
