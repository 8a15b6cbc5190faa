"""The transformer's configuration: a frozen dataclass, hashable, saved as JSON beside weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxsae import config_check
from jaxsae.errors import ConfigError

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "none")
ACTIVATIONS = ("gelu", "gelu_exact", "relu")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """A GPT-style pre-norm decoder.

  vocab_size:      token ids in [0, vocab_size); may exceed the tokenizer's (padding).
  d_model:         residual stream width.
  n_layers:        number of blocks.
  n_heads, d_head: attention heads and their width (n_heads * d_head need not equal d_model).
  d_mlp:           MLP hidden width.
  max_len:         longest sequence; the size of the learned position table.
  norm:            "layernorm" (GPT-2) or "rmsnorm" (weight-sparse models: zero means zero).
  norm_eps:        epsilon inside the norms.
  positions:       "learned" absolute positions, or "none".
  attention_sink:  a learnable per-head logit on an extra zero key/value slot (circuits paper):
                   A = exp(s) / (exp(b_h) + sum exp(s)).
  bigram_table:    add a dense learned table B[token] (vocab x vocab, init U[0, 0.02)) to the
                   logits, so sparse weights need not store bigrams (circuits paper).
  activation:      "gelu" (tanh approximation, as GPT-2), "gelu_exact" or "relu".
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
  d_mlp: int = 512
  max_len: int = 256
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  positions: str = "learned"
  attention_sink: bool = False
  bigram_table: bool = False
  activation: str = "gelu"
  tied_embeddings: bool = True
  use_bias: bool = True
  dtype: str = "float32"
  init_std: float = 0.02
  activation_topk_fraction: float = 0.0

  def __post_init__(self):
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
