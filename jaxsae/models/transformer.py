"""A GPT-style pre-norm decoder in Flax linen, with a hook point at every named activation.

    x = embed(tokens) [+ pos]
    for each block:  x += Attn(Norm(x));  x += MLP(Norm(x))
    logits = Unembed(Norm(x)) [+ B[tokens]]

Parameters carry logical axis names ("vocab", "embed", "heads", "head_dim", "mlp") so that
`jaxsae.sharding` places them on a mesh. Every activation named in `jaxsae.models.hooks` passes
through `hooks.apply`, which captures or edits it; `run` is the call that uses them.

With `activation_topk_fraction` > 0, AbsTopK activation sparsity (Gao et al. 2025, "Weight-sparse
transformers have interpretable circuits") is applied at the eight `SPARSE_SITES` of each block,
immediately before their hook point: a hook there sees (and edits) the sparse value, the node
value that pruning works with. The paper's "attention output" location is `attn.z`, the per-head
attention result before the output projection (heads x d_head sparsified jointly, as are q, k, v).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.config import TransformerConfig
from jaxsae.topk_mask import topk_mask

_ACTIVATIONS = {
  "gelu": functools.partial(nn.gelu, approximate=True),
  "gelu_exact": functools.partial(nn.gelu, approximate=False),
  "relu": nn.relu,
}


SPARSE_SITES = ("attn.in", "attn.q", "attn.k", "attn.v", "attn.z", "mlp.in", "mlp.post", "mlp.out")
"""The block sites that AbsTopK sparsifies when `activation_topk_fraction` > 0 (circuits paper)."""
_PER_HEAD_SITES = ("attn.q", "attn.k", "attn.v", "attn.z")


def abs_topk(x: jnp.ndarray, k: int) -> jnp.ndarray:
  """AbsTopK_k (Gao et al. 2025, circuits paper): per row of the last axis, keep the k entries
  of largest |x| (negative ones included) and zero the rest.

  Ranking is in float32 (`lax.top_k` on bfloat16 is ~100x slower on CPU); among equal |x| the
  lower index wins, so exactly k entries survive per row: the mask of `lax.top_k`, found on CPU
  by bit bisection (`jaxsae.topk_mask`, several times faster there). The result has x's dtype
  and shape; its gradient is the mask: 1 through kept entries, 0 elsewhere.
  """
  width = x.shape[-1]
  if not 0 <= k <= width:
    raise JaxsaeError(f"abs_topk: k={k} must be in [0, {width}] (the last axis's width)")
  if k == width:
    return x
  if k == 0:
    return jnp.zeros_like(x)
  keep = topk_mask(jax.lax.stop_gradient(jnp.abs(x.astype(jnp.float32))), k)
  return jnp.where(keep, x, jnp.zeros((), x.dtype))


def _block_hook(
  module: nn.Module, hooks: hooks_lib.Hooks | None, site: str, x: jnp.ndarray
) -> jnp.ndarray:
  """Sparsify `x` if `site` is one of SPARSE_SITES and the config asks, then run its hook point.

  Per-head sites (..., H, K) are ranked over H * K jointly.
  """
  cfg: TransformerConfig = module.config
  if cfg.activation_topk_fraction > 0 and site in SPARSE_SITES:
    flat = x.reshape(*x.shape[:-2], -1) if site in _PER_HEAD_SITES else x
    x = abs_topk(flat, cfg.topk_count(flat.shape[-1])).reshape(x.shape)
  return hooks_lib.apply(module, hooks, hooks_lib.block(module.layer, site), x)


def _init(std: float, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _out_std(cfg: TransformerConfig) -> float:
  """Output projections: init_std / sqrt(2 n_layers) (GPT-2), so the residual stays O(1)."""
  return cfg.init_std / math.sqrt(2 * cfg.n_layers)


def _norm(cfg: TransformerConfig, name: str) -> nn.Module:
  scale = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
  if cfg.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=cfg.compute_dtype, scale_init=scale, name=name)
  return nn.LayerNorm(
    epsilon=cfg.norm_eps,
    dtype=cfg.compute_dtype,
    use_bias=cfg.use_bias,
    scale_init=scale,
    bias_init=_zeros(("embed",)),
    name=name,
  )


class Attention(nn.Module):
  """Causal multi-head attention with an optional attention sink."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxTxD: jnp.ndarray, hooks: hooks_lib.Hooks | None) -> jnp.ndarray:
    cfg = self.config

    def hook(site, value):
      return _block_hook(self, hooks, site, value)

    def projection(name):
      return nn.DenseGeneral(
        (cfg.n_heads, cfg.d_head),
        use_bias=cfg.use_bias,
        dtype=cfg.compute_dtype,
        kernel_init=_init(cfg.init_std, ("embed", "heads", "head_dim")),
        bias_init=_zeros(("heads", "head_dim")),
        name=name,
      )

    q_BxTxHxK = hook("attn.q", projection("query")(x_BxTxD))
    k_BxTxHxK = hook("attn.k", projection("key")(x_BxTxD))
    v_BxTxHxK = hook("attn.v", projection("value")(x_BxTxD))

    T = x_BxTxD.shape[1]
    scores_BxHxTxT = jnp.einsum("bqhk,bshk->bhqs", q_BxTxHxK, k_BxTxHxK).astype(jnp.float32)
    scores_BxHxTxT = scores_BxHxTxT / math.sqrt(cfg.d_head)
    causal_TxT = jnp.tril(jnp.ones((T, T), bool))
    scores_BxHxTxT = jnp.where(causal_TxT, scores_BxHxTxT, jnp.finfo(jnp.float32).min)
    scores_BxHxTxT = hook("attn.scores", scores_BxHxTxT)

    if cfg.attention_sink:
      sink_H = self.param("sink", _zeros(("heads",)), (cfg.n_heads,))
      sink_BxHxTx1 = jnp.broadcast_to(sink_H[None, :, None, None], (*scores_BxHxTxT.shape[:3], 1))
      probs = jax.nn.softmax(jnp.concatenate([sink_BxHxTx1, scores_BxHxTxT], axis=-1), axis=-1)
      pattern_BxHxTxT = probs[..., 1:]
    else:
      pattern_BxHxTxT = jax.nn.softmax(scores_BxHxTxT, axis=-1)
    pattern_BxHxTxT = hook("attn.pattern", pattern_BxHxTxT)

    z_BxTxHxK = jnp.einsum("bhqs,bshk->bqhk", pattern_BxHxTxT.astype(v_BxTxHxK.dtype), v_BxTxHxK)
    z_BxTxHxK = hook("attn.z", z_BxTxHxK)
    out_BxTxD = nn.DenseGeneral(
      cfg.d_model,
      axis=(-2, -1),
      use_bias=cfg.use_bias,
      dtype=cfg.compute_dtype,
      kernel_init=_init(_out_std(cfg), ("heads", "head_dim", "embed")),
      bias_init=_zeros(("embed",)),
      name="out",
    )(z_BxTxHxK)
    return hook("attn.out", out_BxTxD)


class MLP(nn.Module):
  """Two-layer MLP: fc_out(act(fc_in(x)))."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxTxD: jnp.ndarray, hooks: hooks_lib.Hooks | None) -> jnp.ndarray:
    cfg = self.config

    def hook(site, value):
      return _block_hook(self, hooks, site, value)

    pre_BxTxF = nn.Dense(
      cfg.d_mlp,
      use_bias=cfg.use_bias,
      dtype=cfg.compute_dtype,
      kernel_init=_init(cfg.init_std, ("embed", "mlp")),
      bias_init=_zeros(("mlp",)),
      name="fc_in",
    )(x_BxTxD)
    pre_BxTxF = hook("mlp.pre", pre_BxTxF)
    post_BxTxF = hook("mlp.post", _ACTIVATIONS[cfg.activation](pre_BxTxF))
    out_BxTxD = nn.Dense(
      cfg.d_model,
      use_bias=cfg.use_bias,
      dtype=cfg.compute_dtype,
      kernel_init=_init(_out_std(cfg), ("mlp", "embed")),
      bias_init=_zeros(("embed",)),
      name="fc_out",
    )(post_BxTxF)
    return hook("mlp.out", out_BxTxD)


class Block(nn.Module):
  """x += Attn(Norm(x)); x += MLP(Norm(x)). The residual stream is float32."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxTxD: jnp.ndarray, hooks: hooks_lib.Hooks | None) -> jnp.ndarray:
    cfg = self.config

    def hook(site, value):
      return _block_hook(self, hooks, site, value)

    x_BxTxD = hook("resid_pre", x_BxTxD)
    attn_in = hook("attn.in", _norm(cfg, "attn_norm")(x_BxTxD))
    x_BxTxD = hook("resid_mid", x_BxTxD + Attention(cfg, self.layer, name="attn")(attn_in, hooks))
    mlp_in = hook("mlp.in", _norm(cfg, "mlp_norm")(x_BxTxD))
    return hook("resid_post", x_BxTxD + MLP(cfg, self.layer, name="mlp")(mlp_in, hooks))


class Transformer(nn.Module):
  """tokens (B, T) int32 -> logits (B, T, vocab) float32."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BxT: jnp.ndarray, hooks: hooks_lib.Hooks | None = None) -> jnp.ndarray:
    cfg = self.config

    def hook(name, value):
      return hooks_lib.apply(self, hooks, name, value)

    T = tokens_BxT.shape[-1]
    if cfg.positions == "learned" and T > cfg.max_len:
      raise JaxsaeError(
        f"sequence of {T} tokens exceeds the model's max_len={cfg.max_len}; pass at most "
        f"{cfg.max_len} tokens (sampling slides a window for you)"
      )
    embed = nn.Embed(
      cfg.vocab_size,
      cfg.d_model,
      dtype=cfg.compute_dtype,
      embedding_init=_init(cfg.init_std, ("vocab", "embed")),
      name="embed",
    )
    x_BxTxD = hook("embed.tok", embed(tokens_BxT)).astype(jnp.float32)
    if cfg.positions == "learned":
      pos_TxD = self.param(
        "pos_embed", _init(cfg.init_std, (None, "embed")), (cfg.max_len, cfg.d_model)
      )[:T]
      x_BxTxD = x_BxTxD + hook("embed.pos", jnp.broadcast_to(pos_TxD, x_BxTxD.shape))

    for layer in range(cfg.n_layers):
      x_BxTxD = Block(cfg, layer, name=f"blocks_{layer}")(x_BxTxD, hooks)

    x_BxTxD = hook("final.normed", _norm(cfg, "final_norm")(x_BxTxD))
    if cfg.tied_embeddings:
      logits_BxTxV = embed.attend(x_BxTxD)
    else:
      logits_BxTxV = nn.Dense(
        cfg.vocab_size,
        use_bias=False,
        dtype=cfg.compute_dtype,
        kernel_init=_init(cfg.init_std, ("embed", "vocab")),
        name="unembed",
      )(x_BxTxD)
    logits_BxTxV = logits_BxTxV.astype(jnp.float32)
    if cfg.bigram_table:
      bigram_VxV = self.param(
        "bigram",
        nn.with_logical_partitioning(nn.initializers.uniform(0.02), (None, "vocab")),
        (cfg.vocab_size, cfg.vocab_size),
      )
      logits_BxTxV = logits_BxTxV + bigram_VxV[tokens_BxT]
    return hook("logits", logits_BxTxV)


def hook_names(cfg: TransformerConfig) -> list[str]:
  """Every hook name of a model with this config, in forward order."""
  return hooks_lib.all_names(cfg.n_layers, cfg.positions == "learned")


def run(
  model: Transformer,
  params: Any,
  tokens_BxT: jnp.ndarray,
  *,
  capture: Iterable[str] = (),
  edits: Mapping[str, hooks_lib.EditFn] | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """One forward pass that captures and/or edits hook points; pure, so it jits and grads.

  Args:
    model: the Transformer module.
    params: its parameters (the "params" collection).
    tokens_BxT: int32 token ids.
    capture: hook names whose values to return (after any edit at that point).
    edits: hook name -> function of the activation returning a same-shaped replacement.

  Returns:
    (logits_BxTxV, {hook name: captured value}).
  """
  hooks = hooks_lib.Hooks.make(capture, edits)
  hooks.check(hook_names(model.config))
  if not hooks.capture:
    return model.apply({"params": params}, tokens_BxT, hooks), {}
  logits, state = model.apply(
    {"params": params}, tokens_BxT, hooks, mutable=[hooks_lib.CAPTURE_COLLECTION]
  )
  flat = traverse_util.flatten_dict(state[hooks_lib.CAPTURE_COLLECTION])
  return logits, {path[-1]: value for path, value in flat.items()}


def init_params(model: Transformer, rng: jax.Array) -> Any:
  """Unboxed float32 parameters (logical axis names dropped; see `abstract_params`)."""
  tokens = jnp.zeros((1, min(8, model.config.max_len)), jnp.int32)
  return nn.meta.unbox(model.init(rng, tokens)["params"])


def abstract_params(model: Transformer) -> Any:
  """Boxed ShapeDtypeStructs of the parameters: shapes, dtypes and logical axis names."""
  tokens = jax.ShapeDtypeStruct((1, min(8, model.config.max_len)), jnp.int32)
  return jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]


def param_shapes(model: Transformer) -> Any:
  """Unboxed ShapeDtypeStructs of the parameters."""
  return nn.meta.unbox(abstract_params(model))
