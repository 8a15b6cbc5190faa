"""SmoothQuant (Xiao et al. 2023, eq. 3-4): move activation outliers into the weights.

    Y = (X diag(s)^-1) (diag(s) W),     s_j = max|X_j|^α / max|W_j|^(1-α)

X's channel j is divided by s_j and the rows of W reading it are multiplied by s_j, so the
float outputs are unchanged. The division is folded into what produces X: the norm's gain (and
bias) for attn.in and mlp.in, as in the paper; for attn.z (optional, not in the paper) into the
value projection's columns and bias, which is exact because the attention mix pattern·v is
linear in v per channel (the sink slot's value is zero). mlp.post follows the nonlinearity and
cannot be smoothed by folding.

The families' switches (matrices and norms as `jaxsae.models.weights` reads them):
  gated MLP     mlp.in feeds W_in and W_gate: max|W_j| is over both, and both rows are scaled.
  gain offset   a norm applying (offset + w) gets w' = (offset + w) / s - offset, so that its
                applied gain is divided by s exactly (Gemma: offset 1).
  post-norms    they normalize the sublayer's output, which the fold leaves unchanged: folding
                into the pre-norm stays exact.
  grouped-query W_V's channel (g, k) feeds z channel (h, k) of every query head h of group g, so
                an attn.z fold is exact only with one scale per KV-head channel, the same for
                the group's query heads: `smooth` takes s from the group's largest activation
                and weight maxima; `fold_scales` refuses scales that differ within a group.

Smoothing changes which entries AbsTopK keeps, so models with activation sparsity are refused.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import weights
from jaxsae.models.config import TransformerConfig
from jaxsae.quant import linear_inputs
from jaxsae.quant.stats import ChannelStats

FOLDABLE = {"attn.in": "attn_norm", "mlp.in": "mlp_norm", "attn.z": "W_V"}
"""Smoothable site -> the `weights.LayerWeights` field its division folds into."""
DEFAULT_SITES = ("attn.in", "mlp.in")


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
  """s_j = max|X_j|^α / max|W_j|^(1-α) (eq. 4); 1 for channels that are zero in X or W."""
  if not 0.0 <= alpha <= 1.0:
    raise JaxsaeError(f"alpha={alpha} must be in [0, 1] (SmoothQuant uses 0.5; 0.75-0.85 for GLM)")
  a = np.asarray(act_absmax, np.float64)
  w = np.asarray(weight_absmax, np.float64)
  if a.shape != w.shape:
    raise JaxsaeError(f"activation maxima {a.shape} and weight maxima {w.shape} differ in shape")
  live = (a > 0) & (w > 0)
  s = np.ones_like(a)
  s[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
  return s.astype(np.float32)


def _check_sites(config: TransformerConfig, sites: tuple[str, ...]) -> None:
  unknown = [s for s in sites if s not in FOLDABLE]
  if unknown:
    why = " (it follows a GELU, so no scale can be folded)" if "mlp.post" in unknown else ""
    raise JaxsaeError(f"cannot smooth {unknown}{why}; smoothable sites are {tuple(FOLDABLE)}")
  if config.activation_topk_fraction > 0:
    raise JaxsaeError(
      "smoothing is not exact for a model with AbsTopK activation sparsity "
      f"(activation_topk_fraction={config.activation_topk_fraction}): rescaling channels changes "
      "which entries are kept. Quantize it without smoothing (alpha=None)"
    )


def _per_kv_head(x: np.ndarray, config: TransformerConfig) -> np.ndarray:
  """attn.z channel values (H K,) -> (G K,): the max over each KV head's query heads."""
  H, G, K = config.n_heads, config.kv_heads, config.d_head
  return np.asarray(x).reshape(G, H // G, K).max(axis=1).reshape(-1)


def smooth(
  params: Any,
  config: TransformerConfig,
  stats: ChannelStats,
  alpha: float,
  sites: tuple[str, ...] = DEFAULT_SITES,
) -> tuple[Any, dict[str, np.ndarray]]:
  """(smoothed params, {hook: s}) for every layer's `sites`; float outputs are unchanged."""
  _check_sites(config, sites)
  scales = {}
  for layer in range(config.n_layers):
    for site in sites:
      hook = linear_inputs.hook_name(layer, site)
      if hook not in stats.absmax:
        raise JaxsaeError(f"the channel statistics have no {hook}; compute them on this model")
      x_max = stats.absmax[hook]
      w_max = linear_inputs.weight_channel_absmax(params, layer, site)
      if site == "attn.z" and config.kv_heads != config.n_heads:  # One s per KV-head channel.
        s_GK = smoothing_scales(_per_kv_head(x_max, config), _per_kv_head(w_max, config), alpha)
        s_GxK = s_GK.reshape(config.kv_heads, config.d_head)
        scales[hook] = weights.expand_kv_heads(s_GxK, config.n_heads, axis=0).reshape(-1)
      else:
        scales[hook] = smoothing_scales(x_max, w_max, alpha)
  return fold_scales(params, config, scales), scales


def _kv_head_scales(s: np.ndarray, config: TransformerConfig, hook: str) -> np.ndarray:
  """attn.z scales (H K,) -> (G, K), refusing ones that differ within a KV head's group."""
  H, G, K = config.n_heads, config.kv_heads, config.d_head
  s_GxRxK = s.reshape(G, H // G, K)
  if np.any(s_GxRxK != s_GxRxK[:, :1]):
    raise JaxsaeError(
      f"cannot fold the scales at {hook}: with {G} KV heads for {H} query heads, W_V's channel "
      "(g, k) feeds channel (h, k) of every query head h of group g, so all of them must share "
      "one scale; these differ within a group (smoothing.smooth takes one per KV-head channel)"
    )
  return s_GxRxK[:, 0]


def fold_scales(params: Any, config: TransformerConfig, scales: dict[str, np.ndarray]) -> Any:
  """Params whose input at each hook is divided by `scales[hook]` (per channel) and whose
  kernels reading it are multiplied by it: the same function in float, other channel ranges."""
  params = jax.tree_util.tree_map(lambda a: np.array(a, np.float32), params)  # A private copy.
  for hook, s in scales.items():
    layer, site = hooks_lib.parse(hook)
    _check_sites(config, (site,))
    w = weights.layer_weights(params, layer, config)
    s = np.asarray(s, np.float32)
    if site == "attn.z":  # Columns (g, k) of W_V and b_V produce channel (h, k) of z.
      s_HK = s.reshape(config.n_heads, config.d_head)
      s_GK = _kv_head_scales(s, config, hook)
      w.W_V[...] /= s_GK[None]
      if w.b_V is not None:
        w.b_V[...] /= s_GK
      w.W_O[...] *= s_HK[..., None]
      continue
    norm = getattr(w, FOLDABLE[site])
    weights.set_leaf(params, (*norm.path, "scale"), norm.scale_for(norm.gain / s))
    if norm.bias is not None:
      norm.bias[...] /= s
    for kernel in linear_inputs.kernels(params, layer, site):
      kernel *= s.reshape((-1,) + (1,) * (kernel.ndim - 1))
  return params


def with_outlier_channel(
  params: Any, config: TransformerConfig, channel: int, factor: float, site: str = "attn.in"
) -> Any:
  """The same model in float, with input channel `channel` of `site` made `factor` times larger
  in every layer (its kernel rows `factor` times smaller): a controlled outlier, the kind
  SmoothQuant finds in large models, for testing what quantization does with one."""
  width = linear_inputs.weight_channel_absmax(params, 0, site).size
  if not 0 <= channel < width:
    raise JaxsaeError(f"channel {channel} is outside {site}'s {width} channels")
  s = np.ones(width, np.float32)
  s[channel] = 1.0 / factor
  return fold_scales(
    params, config, dict.fromkeys(linear_inputs.all_hooks(config.n_layers, (site,)), s)
  )


def smoothed_stats(stats: ChannelStats, scales: dict[str, np.ndarray]) -> ChannelStats:
  """The statistics of the smoothed model's inputs: channel j divided by s_j (exact, since
  |x_j / s_j| = |x_j| / s_j with s_j > 0), without another calibration pass."""
  absmax = {h: m / scales[h] if h in scales else m for h, m in stats.absmax.items()}
  pct = {h: p / scales[h][None] if h in scales else p for h, p in stats.percentiles.items()}
  return ChannelStats(absmax, pct, stats.levels, stats.tokens)
