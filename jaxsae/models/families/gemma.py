"""Gemma 1, 2 and 3 (text).

RMSNorm with a (1 + w) gain, embeddings scaled by sqrt(d_model), GeGLU MLPs (tanh GELU), rotary
positions and tied embeddings throughout; Gemma 2 and 3 add norms after each sublayer and a
sliding window on a layer pattern; Gemma 2 soft-caps attention and final logits; Gemma 3 adds a
QK-norm and a second RoPE theta for its sliding layers. Tensor names as in transformers'
`Gemma*ForCausalLM` state dicts. Gemma 3 4B and up are image-text checkpoints
(`Gemma3ForConditionalGeneration`): their `text_config` and language-model tensors load, the
vision tower and projector are left out. Gemma's terms of use apply to its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxsae.models.config import TransformerConfig
from jaxsae.models.families import base
from jaxsae.models.families.base import TensorRule as R

MODEL_TYPES = ("gemma", "gemma2", "gemma3_text", "gemma3")
ARCHITECTURES = (
  "GemmaForCausalLM",
  "Gemma2ForCausalLM",
  "Gemma3ForCausalLM",
  "Gemma3ForConditionalGeneration",
)

ASSUMED = {"attention_bias": False, "use_bidirectional_attention": False}


def _pattern_layer_types(values: Mapping[str, Any], n_layers: int) -> tuple[str, ...]:
  """Layer types of configs that predate `layer_types` (transformers' own defaults)."""
  kind = values.get("model_type")
  if kind == "gemma2":
    return tuple("sliding" if (i + 1) % 2 else "full" for i in range(n_layers))
  if kind == "gemma3_text":
    pattern = values.get("sliding_window_pattern") or values.get("_sliding_window_pattern") or 6
    return tuple("sliding" if (i + 1) % pattern else "full" for i in range(n_layers))
  return ()


def config(values: Mapping[str, Any], dtype: str = "float32") -> TransformerConfig:
  """TransformerConfig from a Gemma / Gemma 2 / Gemma 3 text config.json."""
  if values.get("model_type") == "gemma3" or "text_config" in values:  # Image-text checkpoint.
    text = values.get("text_config") or {}
    tied = text.get("tie_word_embeddings", values.get("tie_word_embeddings", True))
    values = {**text, "model_type": "gemma3_text", "tie_word_embeddings": tied}
  p = base.Problems()
  kind = values.get("model_type")
  base.check_assumed(values, ASSUMED, p)
  dims = base.dimensions(values, p, max_len=8192)
  n_layers = dims["n_layers"]
  if kind == "gemma":
    layer_types = ()
  elif values.get("layer_types") is not None:
    layer_types = base.layer_types(values, n_layers, p)
  else:
    layer_types = _pattern_layer_types(values, n_layers)
  fields = base.rope_fields(values, layer_types, p)
  act = base.activation(values, p, "hidden_activation", "hidden_act")
  p.raise_if_any("config.json", "Use a standard Gemma checkpoint")
  return TransformerConfig(
    **dims,
    norm="rmsnorm",
    norm_eps=float(values.get("rms_norm_eps") or 1e-6),
    norm_scale_offset=1.0,
    activation=act,
    gated_mlp=True,
    post_norms=kind != "gemma",
    qk_norm=kind == "gemma3_text",
    embed_scale=True,
    query_pre_attn_scalar=float(values.get("query_pre_attn_scalar") or 0.0),
    attn_logit_softcap=float(values.get("attn_logit_softcapping") or 0.0),
    final_logit_softcap=float(values.get("final_logit_softcapping") or 0.0),
    sliding_window=(values.get("sliding_window") or 0) if layer_types else 0,
    layer_types=layer_types,
    use_bias=False,
    tied_embeddings=bool(values.get("tie_word_embeddings", True)),
    dtype=dtype,
    **fields,
  )


def rules(cfg: TransformerConfig) -> list[base.TensorRule]:
  """transformers' tensor names -> our parameter paths."""
  layer = "layers.{i}."
  # Gemma 1 names the pre-MLP norm post_attention_layernorm; Gemma 2/3 use that name for the
  # post-norm of attention and call the pre-MLP one pre_feedforward_layernorm.
  pre_mlp = "pre_feedforward_layernorm" if cfg.post_norms else "post_attention_layernorm"
  out = [
    R("embed_tokens.weight", "embed/embedding", base.same),
    R(
      layer + "self_attn.q_proj.weight",
      "blocks_{i}/attn/query/kernel",
      base.heads_in(base.query_heads),
    ),
    R(
      layer + "self_attn.k_proj.weight", "blocks_{i}/attn/key/kernel", base.heads_in(base.kv_heads)
    ),
    R(
      layer + "self_attn.v_proj.weight",
      "blocks_{i}/attn/value/kernel",
      base.heads_in(base.kv_heads),
    ),
    R(layer + "self_attn.o_proj.weight", "blocks_{i}/attn/out/kernel", base.heads_out),
    R(layer + "self_attn.q_norm.weight", "blocks_{i}/attn/q_norm/scale", base.same),
    R(layer + "self_attn.k_norm.weight", "blocks_{i}/attn/k_norm/scale", base.same),
    R(layer + "input_layernorm.weight", "blocks_{i}/attn_norm/scale", base.same),
    R(layer + f"{pre_mlp}.weight", "blocks_{i}/mlp_norm/scale", base.same),
    R(layer + "mlp.gate_proj.weight", "blocks_{i}/mlp/fc_gate/kernel", base.linear),
    R(layer + "mlp.up_proj.weight", "blocks_{i}/mlp/fc_in/kernel", base.linear),
    R(layer + "mlp.down_proj.weight", "blocks_{i}/mlp/fc_out/kernel", base.linear),
    R("norm.weight", "final_norm/scale", base.same),
    R("lm_head.weight", "unembed/kernel", base.linear),
  ]
  if cfg.post_norms:
    out += [
      R(layer + "post_attention_layernorm.weight", "blocks_{i}/attn_post_norm/scale", base.same),
      R(layer + "post_feedforward_layernorm.weight", "blocks_{i}/mlp_post_norm/scale", base.same),
    ]
  return out


# Longest first: image-text checkpoints nest the language model (saved, and in memory).
PREFIXES = ("language_model.model.", "model.language_model.", "model.")
IGNORED = (
  r"rotary_emb\.inv_freq$|^(language_model\.)?lm_head\.weight$"
  r"|^(model\.)?(vision_tower|multi_modal_projector)\."
)
