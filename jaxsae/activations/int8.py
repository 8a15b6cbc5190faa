"""Symmetric int8 codes for stored activations, with one scale per chunk and channel.

For a chunk of rows x (n, d) and each channel j, Δ_j = max_rows |x_j| / 127 and the stored code
is q = round(x / Δ_j) in [-127, 127] (int8); decoding gives q · Δ_j as float32. A channel that is
zero over the whole chunk gets Δ_j = 1, so it decodes to exactly 0. Every element comes back
within Δ_j / 2 of its value, and none is clipped: Δ_j comes from the chunk's own maximum.

Why per channel: residual-stream activations have a few outlier channels tens of times larger
than the rest; one scale per row or per chunk would spend the 8 bits on them and round the other
channels to a handful of levels. One scale per channel also makes the code invariant to any
per-channel rescaling x_j → s_j · x_j (s_j > 0): Δ_j scales by s_j and q is unchanged. So
SmoothQuant-style smoothing (dividing activations by per-channel factors before quantizing)
would change nothing here: it helps per-tensor or per-token activation scales, not these.

Why per chunk: the chunk is the store's unit of writing, so its scales are known as soon as its
rows are, and are written with them. There is no calibration pass over the data before the
harvest, no stored row can fall outside the range its scale covers (no clipping), and a resumed
harvest recomputes the same chunks from the same rows, so its codes and scales are bit for bit
those of an uninterrupted one. The cost is one float32 row of scales per chunk: d · 4 bytes per
chunk_rows · d bytes of codes.
"""

from __future__ import annotations

import numpy as np

from jaxsae.errors import JaxsaeError

LEVELS = 127  # Symmetric: -127..127 (-128 is never used, so negation is exact).


def scales(x_NxD: np.ndarray) -> np.ndarray:
  """(d,) float32 Δ_j = max_rows |x_j| / 127 of one chunk; 1 for channels that are all zero."""
  x = np.asarray(x_NxD)
  if not np.all(np.isfinite(x)):
    raise JaxsaeError(
      "cannot store non-finite activations (NaN or inf) in an int8 store; the model's "
      "activations overflowed: use a float32 store or find the overflow"
    )
  peak = np.max(np.abs(x.astype(np.float64)), axis=0) if len(x) else np.zeros(x.shape[1])
  delta = (peak / LEVELS).astype(np.float32)
  # A peak below float32's smallest normal gives Δ = 0 (or a denormal): treat it as all zero.
  return np.where(delta > 0, delta, np.float32(1)).astype(np.float32)


def quantize(x_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(codes (n, d) int8, Δ (d,) float32) of one chunk of rows, as described above."""
  delta = scales(x_NxD)
  q = np.rint(np.asarray(x_NxD, np.float64) / delta.astype(np.float64))
  return np.clip(q, -LEVELS, LEVELS).astype(np.int8), delta


def dequantize(q_NxD: np.ndarray, delta: np.ndarray) -> np.ndarray:
  """float32 q · Δ. `delta` is (d,) for one chunk, or (n, d) with each row's chunk's scales."""
  return np.asarray(q_NxD, np.float32) * np.asarray(delta, np.float32)
