"""One decoder transformer in Flax linen for every supported family, with a hook point at every
named activation.

    x = embed(tokens) [* sqrt(D)] [+ pos]
    for each block:  x += [PostNorm](Attn(Norm(x)));  x += [PostNorm](MLP(Norm(x)))
                     (parallel blocks: x += Attn(Norm1(x)) + MLP(Norm2(x)))
    logits = [softcap](Unembed(Norm(x))) [+ B[tokens]]

GPT-2 and the byte models use the defaults; `TransformerConfig`'s switches give Llama, Mistral,
Qwen, Gemma 1-3 and GPT-NeoX (rotary positions, grouped-query attention, gated MLPs, RMSNorm
with a (1 + w) scale, post-norms, QK-norm, soft-capping, sliding windows, parallel blocks).

Parameters carry logical axis names ("vocab", "embed", "heads", "kv_heads", "head_dim", "mlp") so
that `jaxsae.sharding` places them on a mesh. Every activation named in `jaxsae.models.hooks`
passes through `hooks.apply`, which captures or edits it; `run` is the call that uses them.

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
from jaxsae.models import norms
from jaxsae.models.config import TransformerConfig
from jaxsae.models.positions import apply_rotary, attention_mask, rotary_inverse_frequencies
from jaxsae.topk_mask import topk_mask

_ACTIVATIONS = {
  "gelu": functools.partial(nn.gelu, approximate=True),
  "gelu_exact": functools.partial(nn.gelu, approximate=False),
  "relu": nn.relu,
  "silu": nn.silu,
}


SPARSE_SITES = ("attn.in", "attn.q", "attn.k", "attn.v", "attn.z", "mlp.in", "mlp.post", "mlp.out")
"""The block sites that AbsTopK sparsifies when `activation_topk_fraction` > 0 (circuits paper)."""


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
    flat = x.reshape(*x.shape[:-2], -1) if site in hooks_lib.PER_HEAD_SITES else x
    x = abs_topk(flat, cfg.topk_count(flat.shape[-1])).reshape(x.shape)
  return hooks_lib.apply(module, hooks, hooks_lib.block(module.layer, site), x)


def _init(std: float, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _out_std(cfg: TransformerConfig) -> float:
  """Output projections: init_std / sqrt(2 n_layers) (GPT-2), so the residual stays O(1)."""
  return cfg.init_std / math.sqrt(2 * cfg.n_layers)


def _norm(cfg: TransformerConfig, name: str, axis_name: str = "embed") -> norms.Norm:
  """The config's norm (`jaxsae.models.norms`: flax's arithmetic, its factor hookable)."""
  offset = cfg.norm_scale_offset if cfg.norm == "rmsnorm" else 0.0
  return norms.Norm(
    cfg.norm, cfg.norm_eps, cfg.compute_dtype, axis_name, offset, cfg.use_bias, name=name
  )


class Attention(nn.Module):
  """Causal attention: multi-head, grouped-query or multi-query (query head h reads KV head
  h // (n_heads / kv_heads)), with optional QK-norm, RoPE, soft-capping, a sliding window and an
  attention sink. Returns the output projection's value."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxTxD: jnp.ndarray, hooks: hooks_lib.Hooks | None) -> jnp.ndarray:
    cfg = self.config
    H, G, K = cfg.n_heads, cfg.kv_heads, cfg.d_head

    def hook(site, value):
      return _block_hook(self, hooks, site, value)

    def projection(name, heads, axis):
      return nn.DenseGeneral(
        (heads, K),
        use_bias=cfg.use_bias or cfg.qkv_bias,
        dtype=cfg.compute_dtype,
        kernel_init=_init(cfg.init_std, ("embed", axis, "head_dim")),
        bias_init=_zeros((axis, "head_dim")),
        name=name,
      )

    q_BxTxHxK = projection("query", H, "heads")(x_BxTxD)
    k_BxTxGxK = projection("key", G, "kv_heads")(x_BxTxD)
    if cfg.qk_norm:
      q_BxTxHxK = _norm(cfg, "q_norm", "head_dim")(q_BxTxHxK)
      k_BxTxGxK = _norm(cfg, "k_norm", "head_dim")(k_BxTxGxK)
    q_BxTxHxK = hook("attn.q", q_BxTxHxK)
    k_BxTxGxK = hook("attn.k", k_BxTxGxK)
    v_BxTxGxK = hook("attn.v", projection("value", G, "kv_heads")(x_BxTxD))
    if cfg.positions == "rotary":
      inv_freq = rotary_inverse_frequencies(cfg, self.layer)
      q_BxTxHxK = hook("attn.rot_q", apply_rotary(q_BxTxHxK, inv_freq))
      k_BxTxGxK = hook("attn.rot_k", apply_rotary(k_BxTxGxK, inv_freq))

    B, T = x_BxTxD.shape[:2]
    q_BxTxGxRxK = q_BxTxHxK.reshape(B, T, G, H // G, K)
    scores = jnp.einsum("bqgrk,bsgk->bgrqs", q_BxTxGxRxK, k_BxTxGxK).astype(jnp.float32)
    scores_BxHxTxT = scores.reshape(B, H, T, T) / math.sqrt(cfg.query_pre_attn_scalar or K)
    if cfg.attn_logit_softcap:
      cap = cfg.attn_logit_softcap
      scores_BxHxTxT = jnp.tanh(scores_BxHxTxT / cap) * cap
    mask_TxT = attention_mask(cfg, self.layer, T)
    scores_BxHxTxT = jnp.where(mask_TxT, scores_BxHxTxT, jnp.finfo(jnp.float32).min)
    scores_BxHxTxT = hook("attn.scores", scores_BxHxTxT)

    if cfg.attention_sink:
      sink_H = self.param("sink", _zeros(("heads",)), (cfg.n_heads,))
      sink_BxHxTx1 = jnp.broadcast_to(sink_H[None, :, None, None], (*scores_BxHxTxT.shape[:3], 1))
      probs = jax.nn.softmax(jnp.concatenate([sink_BxHxTx1, scores_BxHxTxT], axis=-1), axis=-1)
      pattern_BxHxTxT = probs[..., 1:]
    else:
      pattern_BxHxTxT = jax.nn.softmax(scores_BxHxTxT, axis=-1)
    pattern_BxHxTxT = hook("attn.pattern", pattern_BxHxTxT)

    pattern = pattern_BxHxTxT.astype(v_BxTxGxK.dtype).reshape(B, G, H // G, T, T)
    z_BxTxHxK = jnp.einsum("bgrqs,bsgk->bqgrk", pattern, v_BxTxGxK).reshape(B, T, H, K)
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
    return hook("attn.proj" if cfg.post_norms else "attn.out", out_BxTxD)


class MLP(nn.Module):
  """fc_out(act(fc_in(x))), or gated: fc_out(act(fc_gate(x)) * fc_in(x)). Returns fc_out's value."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxTxD: jnp.ndarray, hooks: hooks_lib.Hooks | None) -> jnp.ndarray:
    cfg = self.config

    def hook(site, value):
      return _block_hook(self, hooks, site, value)

    def fc(name, width, std, axes):
      return nn.Dense(
        width,
        use_bias=cfg.use_bias,
        dtype=cfg.compute_dtype,
        kernel_init=_init(std, axes),
        bias_init=_zeros(axes[1:]),
        name=name,
      )

    activation = _ACTIVATIONS[cfg.activation]
    if cfg.gated_mlp:
      pre_BxTxF = hook("mlp.pre", fc("fc_gate", cfg.d_mlp, cfg.init_std, ("embed", "mlp"))(x_BxTxD))
      linear_BxTxF = hook(
        "mlp.linear", fc("fc_in", cfg.d_mlp, cfg.init_std, ("embed", "mlp"))(x_BxTxD)
      )
      post_BxTxF = hook("mlp.post", activation(pre_BxTxF) * linear_BxTxF)
    else:
      pre_BxTxF = hook("mlp.pre", fc("fc_in", cfg.d_mlp, cfg.init_std, ("embed", "mlp"))(x_BxTxD))
      post_BxTxF = hook("mlp.post", activation(pre_BxTxF))
    out_BxTxD = fc("fc_out", cfg.d_model, _out_std(cfg), ("mlp", "embed"))(post_BxTxF)
    return hook("mlp.proj" if cfg.post_norms else "mlp.out", out_BxTxD)


class Block(nn.Module):
  """x += Attn(Norm(x)); x += MLP(Norm(x)), with the config's post-norms or parallel form.
  The residual stream is float32."""

  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxTxD: jnp.ndarray, hooks: hooks_lib.Hooks | None) -> jnp.ndarray:
    cfg = self.config

    def hook(site, value):
      return _block_hook(self, hooks, site, value)

    def normed(norm: str, site: str, x):
      return _norm(cfg, norm)(x, functools.partial(hook, site))

    x_BxTxD = hook("resid_pre", x_BxTxD)
    attn_in = hook("attn.in", normed("attn_norm", "attn.norm_factor", x_BxTxD))
    attn_out = Attention(cfg, self.layer, name="attn")(attn_in, hooks)
    if cfg.post_norms:
      attn_out = hook("attn.out", normed("attn_post_norm", "attn.post_norm_factor", attn_out))
    resid_mid = hook("resid_mid", x_BxTxD + attn_out)
    mlp_read = x_BxTxD if cfg.parallel_block else resid_mid
    mlp_in = hook("mlp.in", normed("mlp_norm", "mlp.norm_factor", mlp_read))
    mlp_out = MLP(cfg, self.layer, name="mlp")(mlp_in, hooks)
    if cfg.post_norms:
      mlp_out = hook("mlp.out", normed("mlp_post_norm", "mlp.post_norm_factor", mlp_out))
    return hook("resid_post", resid_mid + mlp_out)


class Transformer(nn.Module):
  """tokens (B, T) int32 -> logits (B, T, vocab) float32."""

  config: TransformerConfig

  @nn.compact
  def __call__(
    self,
    tokens_BxT: jnp.ndarray,
    hooks: hooks_lib.Hooks | None = None,
    n_blocks: int | None = None,
  ) -> jnp.ndarray | None:
    """Logits; or, with `n_blocks`, only the embeddings and the first `n_blocks` blocks (for
    captures that need no later layer), returning None."""
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
    x_BxTxD = embed(tokens_BxT)
    if cfg.embed_scale:  # Gemma: sqrt(D) rounded to the compute dtype, as its checkpoints expect.
      x_BxTxD = x_BxTxD * jnp.asarray(math.sqrt(cfg.d_model), x_BxTxD.dtype)
    x_BxTxD = hook("embed.tok", x_BxTxD).astype(jnp.float32)
    if cfg.positions == "learned":
      pos_TxD = self.param(
        "pos_embed", _init(cfg.init_std, (None, "embed")), (cfg.max_len, cfg.d_model)
      )[:T]
      x_BxTxD = x_BxTxD + hook("embed.pos", jnp.broadcast_to(pos_TxD, x_BxTxD.shape))

    for layer in range(cfg.n_layers if n_blocks is None else n_blocks):
      x_BxTxD = Block(cfg, layer, name=f"blocks_{layer}")(x_BxTxD, hooks)
    if n_blocks is not None:
      return None

    final_norm = _norm(cfg, "final_norm")
    x_BxTxD = hook(
      "final.normed", final_norm(x_BxTxD, functools.partial(hook, "final.norm_factor"))
    )
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
    if cfg.final_logit_softcap:
      cap = cfg.final_logit_softcap
      logits_BxTxV = jnp.tanh(logits_BxTxV / cap) * cap
    if cfg.bigram_table:
      bigram_VxV = self.param(
        "bigram",
        nn.with_logical_partitioning(nn.initializers.uniform(0.02), (None, "vocab")),
        (cfg.vocab_size, cfg.vocab_size),
      )
      logits_BxTxV = logits_BxTxV + bigram_VxV[tokens_BxT]
    return hook("logits", logits_BxTxV)


def run(
  model: Transformer,
  params: Any,
  tokens_BxT: jnp.ndarray,
  *,
  capture: Iterable[str] = (),
  edits: Mapping[str, hooks_lib.EditFn] | None = None,
  stop_early: bool = False,
) -> tuple[jnp.ndarray | None, dict[str, jnp.ndarray]]:
  """One forward pass that captures and/or edits hook points; pure, so it jits and grads.

  Args:
    model: the Transformer module.
    params: its parameters (the "params" collection).
    tokens_BxT: int32 token ids.
    capture: hook names (or TransformerLens aliases) whose values to return (after any edit
      at that point).
    edits: hook name -> function of the activation returning a same-shaped replacement.
    stop_early: run only the blocks the captures and edits need (no later block, no
      unembedding) and return None for the logits: a harvest of layer 3 of 18 costs 4 blocks.
      Without effect when a capture lies after the blocks.

  Returns:
    (logits_BxTxV or None, {hook name as given: captured value}).
  """
  if isinstance(capture, str):
    capture = (capture,)
  capture = tuple(capture)
  hooks = hooks_lib.Hooks.make(capture, edits)
  hooks.check(hooks_lib.all_names(model.config))
  n_blocks = None
  if stop_early:
    n_blocks = hooks_lib.blocks_needed([*capture, *(edits or {})])
  if not hooks.capture:
    return model.apply({"params": params}, tokens_BxT, hooks, n_blocks), {}
  logits, state = model.apply(
    {"params": params}, tokens_BxT, hooks, n_blocks, mutable=[hooks_lib.CAPTURE_COLLECTION]
  )
  flat = traverse_util.flatten_dict(state[hooks_lib.CAPTURE_COLLECTION])
  by_name = {path[-1]: value for path, value in flat.items()}
  return logits, {name: by_name[hooks_lib.canonical(name)] for name in capture}


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
