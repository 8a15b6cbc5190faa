"""The transformer's configuration: a frozen dataclass, hashable, saved as JSON beside weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxsae import config_check
from jaxsae.errors import ConfigError

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary", "none")
ACTIVATIONS = ("gelu", "gelu_exact", "relu", "silu")
DTYPES = ("float32", "bfloat16", "float16")
LAYER_TYPES = ("full", "sliding")
ROPE_SCALINGS = ("none", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """A pre-norm decoder: GPT-2 and the byte models by default; Llama, Mistral, Qwen, Gemma 1-3
  and GPT-NeoX through the switches below (each off by default, so old configs mean what they
  meant). `jaxsae.models.families` sets them from a Hugging Face config.json.

  vocab_size:      token ids in [0, vocab_size); may exceed the tokenizer's (padding).
  d_model:         residual stream width.
  n_layers:        number of blocks.
  n_heads, d_head: attention heads and their width (n_heads * d_head need not equal d_model).
  n_kv_heads:      key/value heads for grouped-query (Llama 2 70B, Llama 3, Gemma) or multi-query
                   (1) attention; query head h reads KV head h // (n_heads / n_kv_heads).
                   0 (default) = n_heads: ordinary multi-head attention.
  d_mlp:           MLP hidden width.
  max_len:         longest sequence; the size of the learned position table.
  norm:            "layernorm" (GPT-2) or "rmsnorm" (weight-sparse models: zero means zero).
  norm_eps:        epsilon inside the norms.
  positions:       "learned" absolute positions, "rotary" (RoPE, Su et al. 2021, applied to q
                   and k after any QK-norm, in the rotate-half layout of Hugging Face), or "none".
  rope_theta:      RoPE base of full-attention layers: dimension pair i turns at
                   theta^(-2i / d_rot) radians per position.
  rope_local_theta: RoPE base of sliding-window layers (Gemma 3: 10,000 against 1,000,000);
                   0 (default) = rope_theta.
  rotary_fraction: share of each head's dimensions that rotate, d_rot = round(f * d_head), the
                   first d_rot ones (GPT-NeoX / Pythia rotary_pct 0.25); the rest pass unrotated.
  rope_scaling:    "none"; "linear" (positions divided by rope_scaling_factor; Gemma 3 4B+ on
                   full-attention layers only); or "llama3" (Llama 3.1: wavelengths longer than
                   rope_original_max_len / rope_low_freq_factor are divided by the factor,
                   shorter than .../rope_high_freq_factor kept, smooth in between).
  rope_scaling_factor, rope_low_freq_factor, rope_high_freq_factor, rope_original_max_len:
                   the parameters of rope_scaling.
  attention_sink:  a learnable per-head logit on an extra zero key/value slot (circuits paper):
                   A = exp(s) / (exp(b_h) + sum exp(s)).
  bigram_table:    add a dense learned table B[token] (vocab x vocab, init U[0, 0.02)) to the
                   logits, so sparse weights need not store bigrams (circuits paper).
  activation:      "gelu" (tanh approximation, as GPT-2 and Gemma), "gelu_exact" (GPT-NeoX),
                   "relu" or "silu" (Llama, Mistral, Qwen).
  gated_mlp:       MLP = fc_out(act(fc_gate(x)) * fc_in(x)) (SwiGLU with "silu", GeGLU with
                   "gelu"; Shazeer 2020) instead of fc_out(act(fc_in(x))).
  norm_scale_offset: RMSNorm multiplies by (offset + w): 1.0 for Gemma, whose checkpoints store
                   w with 1 + w applied (its zero init is the identity); 0.0 (default) = w.
  post_norms:      a norm on each sublayer's output before it joins the residual stream
                   (Gemma 2/3: x += Norm(Attn(Norm(x))); x += Norm(MLP(Norm(x)))).
  qk_norm:         an RMSNorm over d_head on every query and key head, before RoPE (Gemma 3,
                   Qwen 3), with the model's norm_scale_offset.
  embed_scale:     multiply the token embedding by sqrt(d_model), rounded to the compute dtype
                   (Gemma).
  query_pre_attn_scalar: scores are q.k / sqrt(query_pre_attn_scalar); 0 (default) = d_head
                   (Gemma 2 27B: 144 with d_head 128).
  attn_logit_softcap: scores -> c tanh(scores / c) before the mask (Gemma 2: 50); 0 = off.
  final_logit_softcap: logits -> c tanh(logits / c) (Gemma 2: 30); 0 = off.
  sliding_window:  window of "sliding" layers: a query at position t sees keys t - W < s <= t.
  layer_types:     per layer, "full" or "sliding" attention (Gemma 2 alternates, Gemma 3 has 5
                   sliding per full, Mistral v0.1 is all sliding); () (default) = all full.
  parallel_block:  x += Attn(Norm1(x)) + MLP(Norm2(x)), both reading the block's input
                   (GPT-NeoX / Pythia use_parallel_residual, GPT-J); resid_mid is then
                   resid_pre + attn.out, which the MLP does not read.
  qkv_bias:        biases on q, k and v even when use_bias is False (Qwen 2).
  tied_embeddings: unembedding = token embedding transposed.
  use_bias:        biases in linear layers and LayerNorm (GPT-2: yes; circuits paper: no).
  dtype:           compute dtype of matmuls; parameters and the residual stream stay float32.
  init_std:        std of the normal init; output projections use init_std / sqrt(2 n_layers).
  activation_topk_fraction:
                   AbsTopK activation sparsity (Gao et al. 2025, "Weight-sparse transformers have
                   interpretable circuits"): per token keep the k = round(f * width) entries of
                   largest |x| and zero the rest at attn.in, attn.q, attn.k, attn.v, attn.z,
                   mlp.in, mlp.post and mlp.out (q/k/v/z across heads jointly). Hooks there see
                   the sparse value. 0 (the default) turns it off; the paper uses about 1/4.
  """

  vocab_size: int
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  d_head: int = 32
  n_kv_heads: int = 0
  d_mlp: int = 512
  max_len: int = 256
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  positions: str = "learned"
  rope_theta: float = 10000.0
  rope_local_theta: float = 0.0
  rotary_fraction: float = 1.0
  rope_scaling: str = "none"
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  attention_sink: bool = False
  bigram_table: bool = False
  activation: str = "gelu"
  gated_mlp: bool = False
  norm_scale_offset: float = 0.0
  post_norms: bool = False
  qk_norm: bool = False
  embed_scale: bool = False
  query_pre_attn_scalar: float = 0.0
  attn_logit_softcap: float = 0.0
  final_logit_softcap: float = 0.0
  sliding_window: int = 0
  layer_types: tuple[str, ...] = ()
  parallel_block: bool = False
  qkv_bias: bool = False
  tied_embeddings: bool = True
  use_bias: bool = True
  dtype: str = "float32"
  init_std: float = 0.02
  activation_topk_fraction: float = 0.0

  def __post_init__(self):
    if isinstance(self.layer_types, list):  # From JSON.
      object.__setattr__(self, "layer_types", tuple(self.layer_types))
    problems = self.problems()
    if problems:
      raise ConfigError(problems)

  def problems(self) -> list[str]:
    """Every invalid field, with its fix."""
    p: list[str] = []
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_mlp", "max_len"):
      value = getattr(self, name)
      config_check.require(
        isinstance(value, int) and value > 0, p, f"model.{name}={value!r} must be a positive int"
      )
    config_check.require_choice(self.norm, NORMS, "model.norm", p)
    config_check.require_choice(self.positions, POSITIONS, "model.positions", p)
    config_check.require_choice(self.activation, ACTIVATIONS, "model.activation", p)
    config_check.require_choice(self.dtype, DTYPES, "model.dtype", p)
    config_check.require(self.norm_eps > 0, p, f"model.norm_eps={self.norm_eps} must be > 0")
    config_check.require(self.init_std > 0, p, f"model.init_std={self.init_std} must be > 0")
    p += self._attention_problems() + self._rotary_problems()
    f = self.activation_topk_fraction
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 <= f <= 1:
      p.append(
        f"model.activation_topk_fraction={f!r} must be a number in [0, 1] (0 = off; the circuits "
        "paper keeps about 1/4 of each activation)"
      )
    elif f > 0 and not p:
      width = min(self.d_model, self.n_heads * self.d_head, self.d_mlp)
      config_check.require(
        self.topk_count(width) >= 1,
        p,
        f"model.activation_topk_fraction={f} keeps round({f} * {width}) = 0 entries of the "
        f"narrowest sparsified activation (width {width}); use at least 1/{width}",
      )
    return p

  def _attention_problems(self) -> list[str]:
    p: list[str] = []
    kv = self.n_kv_heads
    if not isinstance(kv, int) or kv < 0:
      p.append(f"model.n_kv_heads={kv!r} must be an int >= 0 (0 = n_heads)")
    elif kv and isinstance(self.n_heads, int) and self.n_heads % kv:
      p.append(
        f"model.n_kv_heads={kv} must divide n_heads={self.n_heads} (each KV head serves a "
        "whole group of query heads)"
      )
    for name in ("query_pre_attn_scalar", "attn_logit_softcap", "final_logit_softcap"):
      config_check.require(
        getattr(self, name) >= 0, p, f"model.{name}={getattr(self, name)} must be >= 0 (0 = off)"
      )
    bad = [t for t in self.layer_types if t not in LAYER_TYPES]
    config_check.require(
      not bad, p, f"model.layer_types has {bad}: each entry must be one of {LAYER_TYPES}"
    )
    if self.layer_types and len(self.layer_types) != self.n_layers:
      p.append(
        f"model.layer_types has {len(self.layer_types)} entries for n_layers={self.n_layers}; "
        "give one per layer, or () for all full"
      )
    if "sliding" in self.layer_types and not (
      isinstance(self.sliding_window, int) and self.sliding_window > 0
    ):
      p.append(f"model.sliding_window={self.sliding_window!r}: sliding layers need a window > 0")
    if self.parallel_block and self.post_norms:
      p.append("model.parallel_block and model.post_norms together are not a known family")
    return p

  def _rotary_problems(self) -> list[str]:
    p: list[str] = []
    rotary = self.positions == "rotary"
    config_check.require_choice(self.rope_scaling, ROPE_SCALINGS, "model.rope_scaling", p)
    config_check.require(
      self.rope_theta > 0 and self.rope_local_theta >= 0,
      p,
      f"model.rope_theta={self.rope_theta} must be > 0 and rope_local_theta="
      f"{self.rope_local_theta} >= 0 (0 = rope_theta)",
    )
    f = self.rotary_fraction
    if not 0 < f <= 1:
      p.append(f"model.rotary_fraction={f} must be in (0, 1]")
    elif rotary and isinstance(self.d_head, int) and self.rotary_dim % 2:
      p.append(
        f"model.rotary_fraction={f} rotates {self.rotary_dim} of d_head={self.d_head} "
        "dimensions; RoPE needs an even count"
      )
    config_check.require(
      self.rope_scaling_factor >= 1,
      p,
      f"model.rope_scaling_factor={self.rope_scaling_factor} must be >= 1",
    )
    if self.rope_scaling == "llama3":
      config_check.require(
        self.rope_high_freq_factor > self.rope_low_freq_factor > 0,
        p,
        "model.rope_high_freq_factor must exceed rope_low_freq_factor > 0 (Llama 3.1: 4 and 1)",
      )
    changed = self.rope_scaling != "none" or self.rope_local_theta or self.rotary_fraction != 1
    if changed and not rotary:
      p.append(
        f'model.rope_* and rotary_fraction take effect only with positions="rotary" (it is '
        f'"{self.positions}")'
      )
    return p

  @property
  def kv_heads(self) -> int:
    """Key/value heads: n_kv_heads, or n_heads when it is 0."""
    return self.n_kv_heads or self.n_heads

  @property
  def rotary_dim(self) -> int:
    """Dimensions per head that RoPE rotates."""
    return round(self.rotary_fraction * self.d_head)

  def layer_type(self, layer: int) -> str:
    """ "full" or "sliding": the attention of block `layer`."""
    return self.layer_types[layer] if self.layer_types else "full"

  def topk_count(self, width: int) -> int:
    """How many of `width` entries AbsTopK keeps per token: round(activation_topk_fraction * width).

    0 when the sparsity is off.
    """
    return min(width, round(self.activation_topk_fraction * width))

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> TransformerConfig:
    """Build from a mapping, rejecting unknown fields with a close-match suggestion."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    schema = {name: None for name in fields}
    problems = config_check.unknown_keys(dict(values), schema, prefix="model.")
    if problems:
      raise ConfigError(problems)
    return cls(**dict(values))
