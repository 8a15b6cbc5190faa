"""Circuit nodes: the channels that pruning keeps or mean-ablates (Gao et al. 2025, §pruning).

A node is one channel at one of the eight sites of a block — attention input, q, k, v (heads x
d_head flattened), attention result z, MLP input, MLP neurons, MLP output — or of the final
residual after the final norm, shared across positions: 8 sites per layer (7 d_model + d_mlp
channels when n_heads d_head = d_model) plus d_model final channels.

A mask m over a site's channels replaces its activation by

    x_i <- m_i x_i + (1 - m_i) mu_i                                        (mean ablation)

with mu_i the channel's mean over the pretraining distribution. In the weight-sparse model the
hooks see the AbsTopK-sparsified node value, so the mask acts on the node as the paper defines it.

`freeze_norm` (the fix a public replication proposes against masks that cheat through the norms):
each normalization divides by the root-mean-square of the *unablated* residual of that token
(taken from a clean pass) instead of the ablated one, so ablating some channels cannot rescale
the others. Implemented for RMSNorm models: the normalized value is multiplied by
rms(ablated) / rms(clean), which commutes with AbsTopK (a positive per-token factor).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import SPARSE_SITES, run

FINAL_SITE = "final.normed"


def node_sites(config: TransformerConfig) -> list[str]:
  """Hook names of every node site, in forward order: 8 per block, then the final residual."""
  sites = [f"blocks.{layer}.{s}" for layer in range(config.n_layers) for s in SPARSE_SITES]
  return sites + [FINAL_SITE]


def site_kind(site: str) -> str:
  """ "attn.q", "mlp.post", ... for block sites; "final.normed" for the final residual."""
  return site if site == FINAL_SITE else site.split(".", 2)[2]


def site_layer(site: str) -> int | None:
  return None if site == FINAL_SITE else int(site.split(".")[1])


def site_width(config: TransformerConfig, site: str) -> int:
  """Channels at a node site: heads x d_head for q/z (KV heads x d_head for k/v), d_mlp for
  neurons, else d_model."""
  kind = site_kind(site)
  if kind in ("attn.k", "attn.v"):
    return config.kv_heads * config.d_head
  if kind in hooks_lib.PER_HEAD_SITES:
    return config.n_heads * config.d_head
  if kind == "mlp.post":
    return config.d_mlp
  return config.d_model


def node_count(config: TransformerConfig) -> int:
  return sum(site_width(config, s) for s in node_sites(config))


def flat_channels(site: str, x: jnp.ndarray) -> jnp.ndarray:
  """A site's activation with channels on the last axis: (..., H, K) -> (..., H K) for q/k/v/z."""
  return x.reshape(*x.shape[:-2], -1) if site_kind(site) in hooks_lib.PER_HEAD_SITES else x


def node_means(lm, windows_NxT: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
  """{site: (width,) float32}: every node's mean over all positions of the windows (token ids
  from the pretraining distribution, e.g. training-split windows), float64 accumulation."""
  windows_NxT = np.asarray(windows_NxT)
  if windows_NxT.ndim != 2 or len(windows_NxT) == 0:
    raise JaxsaeError(
      f"node_means needs a non-empty (N, T) array of token windows, got shape "
      f"{windows_NxT.shape}; pass windows of the pretraining corpus"
    )
  sites = node_sites(lm.config)
  sums = {s: np.zeros(site_width(lm.config, s), np.float64) for s in sites}
  count = 0
  for lo in range(0, len(windows_NxT), batch_size):
    chunk = windows_NxT[lo : lo + batch_size]
    _, captured = lm.run(chunk, capture=sites)
    for s in sites:
      x = np.asarray(flat_channels(s, captured[s]), np.float64)
      sums[s] += x.reshape(-1, x.shape[-1]).sum(0)
    count += chunk.shape[0] * chunk.shape[1]
  return {s: (v / count).astype(np.float32) for s, v in sums.items()}


def check_masks(config: TransformerConfig, masks: Mapping[str, object]) -> None:
  """Raise a JaxsaeError naming every mask with an unknown site or a wrong width."""
  known = set(node_sites(config))
  problems = [f'"{s}" is not a node site' for s in masks if s not in known]
  problems += [
    f'"{s}" has {np.shape(m)[-1]} entries, the site has {site_width(config, s)} channels'
    for s, m in masks.items()
    if s in known and np.shape(m)[-1:] != (site_width(config, s),)
  ]
  if problems:
    raise JaxsaeError(
      "bad node masks: " + "; ".join(problems) + "; build masks with one entry per channel of "
      "the sites jaxsae.sparse.nodes.node_sites(config) lists"
    )


def _norm_inputs(config: TransformerConfig) -> dict[str, str]:
  """Normalized site -> the residual hook it normalizes (for freeze_norm)."""
  pairs = {}
  for layer in range(config.n_layers):
    pairs[f"blocks.{layer}.attn.in"] = f"blocks.{layer}.resid_pre"
    pairs[f"blocks.{layer}.mlp.in"] = f"blocks.{layer}.resid_mid"
  pairs[FINAL_SITE] = f"blocks.{config.n_layers - 1}.resid_post"
  return pairs


def _rms(x: jnp.ndarray, eps: float) -> jnp.ndarray:
  x = x.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


def clean_norms(model, params, tokens_BxT: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """{normalized site: (B, T, 1) rms of the unablated residual it normalizes} (freeze_norm)."""
  pairs = _norm_inputs(model.config)
  _, captured = run(model, params, tokens_BxT, capture=tuple(pairs.values()))
  return {
    site: jax.lax.stop_gradient(_rms(captured[resid], model.config.norm_eps))
    for site, resid in pairs.items()
  }


def masked_edits(
  config: TransformerConfig,
  masks: Mapping[str, jnp.ndarray],
  means: Mapping[str, jnp.ndarray],
  frozen_norms: Mapping[str, jnp.ndarray] | None = None,
) -> dict:
  """Hook edits applying x <- m x + (1 - m) mu at every masked site (masks broadcast over
  positions). With `frozen_norms` (from `clean_norms`), every normalized site is first rescaled
  by rms(ablated residual) / rms(clean residual). Pass the result to `transformer.run(edits=)`."""
  if frozen_norms is not None and config.norm != "rmsnorm":
    raise ConfigError(
      [
        f"freeze_norm supports RMSNorm models; this model uses {config.norm!r}. Prune without "
        "freeze_norm, or use a model with norm='rmsnorm'"
      ]
    )
  edits, stash = {}, {}

  def mask_fn(site):
    m, mu = jnp.asarray(masks[site]), jnp.asarray(means[site])

    def edit(x):
      flat = flat_channels(site, x)
      return (m * flat + (1 - m) * mu).astype(x.dtype).reshape(x.shape)

    return edit

  for site in masks:
    edits[site] = mask_fn(site)
  if frozen_norms is None:
    return edits

  def record(resid_name):
    def edit(x):
      stash[resid_name] = x  # Same trace: read by the normalized site later in this forward.
      return x

    return edit

  def refreeze(site, resid_name, then):
    def edit(x):
      ratio = _rms(stash[resid_name], config.norm_eps) / frozen_norms[site]
      x = (x.astype(jnp.float32) * ratio).astype(x.dtype)
      return then(x) if then is not None else x

    return edit

  for site, resid_name in _norm_inputs(config).items():
    edits[resid_name] = record(resid_name)
    edits[site] = refreeze(site, resid_name, edits.get(site))
  return edits
