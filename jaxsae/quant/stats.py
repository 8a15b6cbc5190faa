"""Per-channel statistics of every linear layer's input: where the activation outliers are.

For the input of every linear layer (each hook of `linear_inputs.all_hooks`, and the
unembedding's input `final.normed`) and each channel j: max_t |x_tj| over every
calibration token (SmoothQuant's max(|X_j|), eq. 4), and percentiles of |x_tj| over up to
`max_rows` tokens (evenly spaced over the calibration set, so memory stays bounded on large
models). Outlier channels are those whose max exceeds `OUTLIER_RATIO` times the median channel's
max; in large models they sit in the same few channels at every token and layer (SmoothQuant
§3, LLM.int8()).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from jaxsae import run_log
from jaxsae.activations import harvest
from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.language_model import LanguageModel
from jaxsae.quant import linear_inputs

OUTLIER_RATIO = 6.0
PERCENTILES = (50.0, 99.0, 99.9)


@dataclasses.dataclass
class ChannelStats:
  """absmax[hook]: (C,) max |x| per channel; percentiles[hook]: (P, C) at `levels`."""

  absmax: dict[str, np.ndarray]
  percentiles: dict[str, np.ndarray]
  levels: tuple[float, ...]
  tokens: int

  def hooks(self) -> list[str]:
    return list(self.absmax)

  def save(self, path: str | pathlib.Path) -> None:
    """A safetensors file: absmax/<hook>, percentiles/<hook>, and levels/tokens metadata."""
    tensors = {f"absmax/{h}": v for h, v in self.absmax.items()}
    tensors |= {f"percentiles/{h}": v for h, v in self.percentiles.items()}
    meta = {"levels": ",".join(map(str, self.levels)), "tokens": str(self.tokens)}
    safetensors.numpy.save_file(tensors, str(path), metadata=meta)

  @classmethod
  def load(cls, path: str | pathlib.Path) -> ChannelStats:
    with safetensors.safe_open(str(path), "numpy") as f:
      meta = f.metadata() or {}
      if "levels" not in meta or "tokens" not in meta:
        raise JaxsaeError(f"{path} is not a channel-statistics file (no levels/tokens metadata)")
      absmax, pct = {}, {}
      for key in f.keys():
        kind, hook = key.split("/", 1)
        (absmax if kind == "absmax" else pct)[hook] = f.get_tensor(key)
    levels = tuple(float(v) for v in meta["levels"].split(","))
    return cls(absmax, pct, levels, int(meta["tokens"]))


def channel_stats(
  lm: LanguageModel,
  windows_NxT: np.ndarray,
  *,
  batch_size: int = 16,
  levels: tuple[float, ...] = PERCENTILES,
  max_rows: int = 16384,
  params=None,
  progress: bool = True,
) -> ChannelStats:
  """Statistics of every linear input of `lm` (or of `params`, e.g. smoothed) on the windows."""
  windows_NxT = np.asarray(windows_NxT, np.int32)
  if windows_NxT.ndim != 2 or len(windows_NxT) == 0:
    raise JaxsaeError(
      f"calibration windows must be a non-empty (N, T) array, got {windows_NxT.shape}"
    )
  hooks = (*linear_inputs.all_hooks(lm.config.n_layers), linear_inputs.UNEMBED_INPUT)
  capture = harvest.capture_fn(lm.config, hooks)
  params = lm.params if params is None else params
  n_tokens = windows_NxT.size
  keep_every = max(1, -(-n_tokens // max_rows))  # Every keep_every-th token feeds percentiles.
  absmax = {h: None for h in hooks}
  samples = {h: [] for h in hooks}
  bar = run_log.progress(n_tokens, desc="channel stats") if progress else None
  for start in range(0, len(windows_NxT), batch_size):
    batch = windows_NxT[start : start + batch_size]
    acts = jax.device_get(capture(params, jnp.asarray(batch)))
    first = start * windows_NxT.shape[1]  # Token index of this batch's first token.
    offset = (-first) % keep_every
    for h, a in acts.items():
      flat = np.abs(a.reshape(-1, int(np.prod(a.shape[2:]))))  # attn.z: heads × dims.
      batch_max = flat.max(axis=0)
      absmax[h] = batch_max if absmax[h] is None else np.maximum(absmax[h], batch_max)
      samples[h].append(flat[offset::keep_every])
    if bar is not None:
      bar.update(batch.size)
  if bar is not None:
    bar.close()
  q = np.asarray(levels, np.float64)
  pct = {
    h: np.percentile(np.concatenate(s), q, axis=0).astype(np.float32) for h, s in samples.items()
  }
  return ChannelStats(absmax, pct, tuple(float(v) for v in levels), int(n_tokens))


def outlier_rows(stats: ChannelStats, top: int = 3) -> list[dict]:
  """One table row per linear input: channel count, typical and largest magnitudes, how many
  channels are outliers (max > OUTLIER_RATIO × median channel max), and the largest channels."""
  rows = []
  for hook in stats.hooks():
    layer, site = hooks_lib.parse(hook)
    m = stats.absmax[hook]
    median = float(np.median(m))
    order = np.argsort(-m)[:top]
    row = {"layer": "final" if layer is None else layer, "site": site, "channels": int(m.size)}
    for level, values in zip(stats.levels, stats.percentiles[hook], strict=True):
      row[f"p{level:g} |x| (median channel)"] = float(np.median(values))
    row |= {
      "median channel max": median,
      "max |x|": float(m.max()),
      "max / median": float(m.max() / median) if median > 0 else float("inf"),
      "outlier channels": int(np.sum(m > OUTLIER_RATIO * median)),
      "top channels": " ".join(f"{j}:{m[j]:.3g}" for j in order),
    }
    rows.append(row)
  return rows
