"""Llama-architecture families: Llama 1-3, Mistral, Qwen 2 and Qwen 3.

Pre-RMSNorm decoders with rotary positions, grouped-query attention and a SwiGLU MLP; Qwen 2
adds q/k/v biases, Qwen 3 a QK-norm, Mistral v0.1 a sliding window on every layer, Llama 3.1
its rope scaling. Tensor names as in transformers' `*ForCausalLM` state dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxsae.models.config import TransformerConfig
from jaxsae.models.families import base
from jaxsae.models.families.base import TensorRule as R

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")

# Fields that change the computation, at the value this converter assumes.
ASSUMED = {
  "mlp_bias": False,
  "pretraining_tp": 1,
  "use_sliding_window": False,  # Qwen 2/3: no window unless switched on.
}


def config(values: Mapping[str, Any], dtype: str = "float32") -> TransformerConfig:
  """TransformerConfig from a Llama / Mistral / Qwen config.json."""
  p = base.Problems()
  kind = values.get("model_type")
  base.check_assumed(values, ASSUMED, p)
  if kind != "qwen2":
    base.check_assumed(values, {"attention_bias": False}, p)
  dims = base.dimensions(values, p, max_len=2048)
  n_layers = dims["n_layers"]
  window = values.get("sliding_window") if kind == "mistral" else None
  layer_types = base.layer_types(values, n_layers, p) if kind != "mistral" else ()
  if window:
    layer_types = ("sliding",) * n_layers
  fields = base.rope_fields(values, layer_types, p)
  act = base.activation(values, p, "hidden_act")
  p.raise_if_any(
    "config.json", "Use a standard checkpoint of one of these families, or convert it yourself"
  )
  return TransformerConfig(
    **dims,
    norm="rmsnorm",
    norm_eps=float(values.get("rms_norm_eps") or 1e-6),
    activation=act,
    gated_mlp=True,
    qk_norm=kind == "qwen3",
    use_bias=False,
    qkv_bias=bool(values.get("attention_bias")) or kind == "qwen2",
    tied_embeddings=bool(values.get("tie_word_embeddings", False)),
    sliding_window=window or (values.get("sliding_window") or 0 if layer_types else 0),
    layer_types=layer_types,
    dtype=dtype,
    **fields,
  )


def rules(cfg: TransformerConfig) -> list[base.TensorRule]:
  """transformers' tensor names -> our parameter paths."""
  layer = "layers.{i}."
  out = [R("embed_tokens.weight", "embed/embedding", base.same)]
  for name, target, heads in (
    ("q", "query", base.query_heads),
    ("k", "key", base.kv_heads),
    ("v", "value", base.kv_heads),
  ):
    for kind in ("weight", "bias"):
      out.append(
        R(
          f"{layer}self_attn.{name}_proj.{kind}",
          f"blocks_{{i}}/attn/{target}/{'kernel' if kind == 'weight' else 'bias'}",
          base.heads_in(heads),
        )
      )
  out += [
    R(layer + "self_attn.o_proj.weight", "blocks_{i}/attn/out/kernel", base.heads_out),
    R(layer + "self_attn.q_norm.weight", "blocks_{i}/attn/q_norm/scale", base.same),
    R(layer + "self_attn.k_norm.weight", "blocks_{i}/attn/k_norm/scale", base.same),
    R(layer + "input_layernorm.weight", "blocks_{i}/attn_norm/scale", base.same),
    R(layer + "post_attention_layernorm.weight", "blocks_{i}/mlp_norm/scale", base.same),
    R(layer + "mlp.gate_proj.weight", "blocks_{i}/mlp/fc_gate/kernel", base.linear),
    R(layer + "mlp.up_proj.weight", "blocks_{i}/mlp/fc_in/kernel", base.linear),
    R(layer + "mlp.down_proj.weight", "blocks_{i}/mlp/fc_out/kernel", base.linear),
    R("norm.weight", "final_norm/scale", base.same),
    R("lm_head.weight", "unembed/kernel", base.linear),
  ]
  return out


PREFIXES = ("model.",)
IGNORED = r"rotary_emb\.inv_freq$|^lm_head\.weight$"
