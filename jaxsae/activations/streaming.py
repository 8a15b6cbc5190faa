"""Streaming: activations computed by the language model on the fly, with no store on disk.

Batch i (a global index, so the stream is deterministic and its grain iterator checkpoints as
one integer) draws `windows_per_batch` windows with a generator seeded by (seed, i), runs the
model once over them, and keeps a seeded random subset of `batch_size` of their non-separator
positions. Subsampling positions decorrelates a batch's rows (neighbouring tokens share
context), at the price of computing more activations than are used. Every process computes
the global batch and keeps its slice: simple and exact, and on a pod the model forward is
cheap next to the SAE step it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grain
import jax.numpy as jnp
import numpy as np

from jaxsae.activations.harvest import capture_fn, hook_widths, plan_rows
from jaxsae.errors import JaxsaeError
from jaxsae.models.language_model import LanguageModel
from jaxsae.sae.row_sources import local_batch_size

_BATCHES = 1 << 40
# One forward at a time, at most two batches ahead of the step: the forward already uses every
# core, and grain's default (16 threads, 500 batches) ran 16 at once beside the step while its
# queue grew; a Gemma 3 CLT sweep's batches (24 MB each) filled 24 GB and the run was killed.
_READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)


class StreamingSource:
  """An SAE trainer's activation source that runs `lm` over `windows` at `hook` as it goes.

  `hook` may name several sites, whose rows lie side by side (a cross-layer transcoder's inputs:
  every layer's MLP input), and `target_hook` the site(s) a transcoder writes: the source then
  yields (input rows, target rows) pairs of the same tokens, both from one forward pass, so no
  store of every layer is needed."""

  def __init__(
    self,
    lm: LanguageModel,
    windows_NxT: np.ndarray,
    hook: str | Sequence[str],
    *,
    target_hook: str | Sequence[str] | None = None,
    skip_separator: bool = True,
    skip_first: int = 0,
    oversample: float = 1.5,
  ):
    self.lm = lm
    self.hooks = (hook,) if isinstance(hook, str) else tuple(hook)
    self.hook = self.hooks[0] if len(self.hooks) == 1 else ",".join(self.hooks)
    targets = () if target_hook is None else target_hook
    self.target_hooks = (targets,) if isinstance(targets, str) else tuple(targets)
    self.windows = np.asarray(windows_NxT, np.int32)
    widths = hook_widths(lm, self.hooks + self.target_hooks)
    self.d_in = sum(widths[h] for h in self.hooks)
    if self.target_hooks:
      self.d_out = sum(widths[h] for h in self.target_hooks)
      self.target_rows = self._target_rows  # A paired source (`row_sources.is_paired`).
    self.plan = plan_rows(self.windows, lm.tokenizer.separator_id, skip_separator, skip_first)
    if len(self.plan) == 0:
      raise JaxsaeError("the windows hold no positions to stream; pass more text")
    self.keep = np.zeros(self.windows.shape, bool)
    self.keep[self.plan[:, 0], self.plan[:, 1]] = True
    self.oversample = oversample
    self._capture = capture_fn(lm.config, tuple(dict.fromkeys(self.hooks + self.target_hooks)))
    self._last: tuple[bytes, np.ndarray] | None = None  # The last gathered indices and rows.

  def __len__(self) -> int:
    return len(self.plan)

  def _activations(self, window_ids: np.ndarray) -> np.ndarray:
    """Every input site's rows, then every target site's, side by side."""
    out = self._capture(self.lm.params, jnp.asarray(self.windows[window_ids]))
    sites = self.hooks + self.target_hooks
    return np.concatenate([np.asarray(out[h], np.float32) for h in sites], axis=-1)

  def _gather(self, indices: np.ndarray, inputs: bool) -> np.ndarray:
    """Input (or target) rows at `indices`. One forward gives both: a paired source's
    `rows(i)` then `target_rows(i)` (the trainer's initial statistics) run the model once."""
    indices = np.asarray(indices)
    key = indices.tobytes()
    if self._last is None or self._last[0] != key:
      picked = self.plan[indices]
      windows, inverse = np.unique(picked[:, 0], return_inverse=True)
      out = []
      for start in range(0, len(windows), 64):
        out.append(self._activations(windows[start : start + 64]))
      self._last = key, np.concatenate(out)[inverse, picked[:, 1]]
    both = self._last[1]
    return both[:, : self.d_in] if inputs else both[:, self.d_in :]

  def rows(self, indices: np.ndarray) -> np.ndarray:
    """Rows of the planned (window, position) list, computed by the model."""
    return self._gather(indices, inputs=True)

  def _target_rows(self, indices: np.ndarray) -> np.ndarray:
    targets = self._gather(indices, inputs=False)
    self._last = None  # The pair is read: free its rows.
    return targets

  def sample_indices(self, count: int, seed: int) -> np.ndarray:
    """`count` planned rows for the trainer's initial statistics (`row_sources.sample_indices`):
    every kept position of as few seeded random windows as hold them, so the sample costs a
    forward of about count / (kept per window) windows, not one window per row (a sample of
    2,048 rows of 2,048 Gemma windows would run ~1,300 of them)."""
    count = min(count, len(self.plan))
    order = np.random.default_rng(seed).permutation(len(self.windows))
    per_window = np.bincount(self.plan[:, 0], minlength=len(self.windows))
    n_windows = int(np.searchsorted(np.cumsum(per_window[order]), count)) + 1
    chosen = np.isin(self.plan[:, 0], order[:n_windows])
    return np.flatnonzero(chosen)[:count]

  def batch(self, index: int, batch_size: int, seed: int):
    """Global batch `index`: `batch_size` rows from freshly drawn windows (with targets, the
    pair (input rows, target rows))."""
    kept_per_window = max(len(self.plan) / len(self.windows), 1.0)
    n_windows = min(len(self.windows), math.ceil(self.oversample * batch_size / kept_per_window))
    rng = np.random.default_rng([seed, index])
    chosen = np.sort(rng.choice(len(self.windows), size=n_windows, replace=False))
    acts = self._activations(chosen)
    w, pos = np.nonzero(self.keep[chosen])
    if len(w) < batch_size:
      raise JaxsaeError(
        f"{n_windows} windows hold only {len(w)} positions for a batch of {batch_size}; "
        "raise oversample or pass more windows"
      )
    pick = np.sort(rng.choice(len(w), size=batch_size, replace=False))
    rows = acts[w[pick], pos[pick]]
    if not self.target_hooks:
      return rows
    return rows[:, : self.d_in], rows[:, self.d_in :]

  def train_batches(
    self, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1
  ) -> grain.DatasetIterator:
    local = local_batch_size(batch_size, process_count)

    def local_batch(index: int):
      mine = slice(process_index * local, (process_index + 1) * local)
      rows = self.batch(int(index), batch_size, seed)
      return tuple(r[mine] for r in rows) if self.target_hooks else rows[mine]

    dataset = grain.MapDataset.range(_BATCHES).map(local_batch)
    return iter(dataset.to_iter_dataset(_READ_OPTIONS))
