"""Harvest: run a language model over token windows and write hook activations to a store.

Several hooks are captured in one forward pass. Every row's (window, position, token) is
planned before the first forward, so the store's size is known and a resumed harvest can find
where it stopped: `rows_written` advances only after a whole chunk is on disk, and a rerun
starts from the batch holding that row (the batches of an uninterrupted run, so the rows come
out bit for bit the same), dropping the rows it already has. The next batch's forward is
dispatched before this one's rows are picked, and a chunk's writes stay in flight while the
following batches compute, so the model rarely waits on the store. Separator positions (the
start-of-document token, a BOS) can be skipped: their activations are outliers an SAE should
not spend latents on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import hashlib
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae import preemption, run_log
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import run as run_model
from jaxsae.sae import normalization


def plan_rows(
  windows_NxT: np.ndarray, separator_id: int, skip_separator: bool, skip_first: int = 0
) -> np.ndarray:
  """(n_rows, 3) int32 (window, position, token) of the rows to harvest, in window order.

  skip_separator leaves out separator positions; skip_first the first positions of every window
  (GPT-2's position 0 carries a residual norm tens of times the others: an attention sink).
  """
  if not 0 <= skip_first < windows_NxT.shape[1]:
    raise JaxsaeError(
      f"skip_first={skip_first} must be in [0, {windows_NxT.shape[1]}) (the window length)"
    )
  keep = np.ones(windows_NxT.shape, bool)
  keep[:, :skip_first] = False
  if skip_separator:
    keep &= windows_NxT != separator_id
  window, position = np.nonzero(keep)
  return np.stack([window, position, windows_NxT[window, position]], axis=1).astype(np.int32)


@functools.lru_cache(maxsize=8)
def capture_fn(lm_config, hooks: tuple[str, ...]):
  from jaxsae.models.transformer import Transformer

  model = Transformer(lm_config)

  def capture(params, tokens):
    # Only the blocks up to the deepest hook run: no later block, no unembedding.
    _, cache = run_model(model, params, tokens, capture=hooks, stop_early=True)
    return {h: cache[h].astype(jnp.float32) for h in hooks}

  return jax.jit(capture)


def harvest(
  lm: LanguageModel,
  windows_NxT: np.ndarray,
  hooks: Sequence[str],
  directory: str | pathlib.Path,
  *,
  batch_size: int = 32,
  chunk_rows: int = 4096,
  dtype: str = "float32",
  skip_separator: bool = True,
  skip_first: int = 0,
  metadata: dict | None = None,
  stop_after_chunks: int | None = None,
  progress: bool = True,
) -> ActivationStore:
  """Write the activations of `lm` at `hooks` for every (kept) position of `windows_NxT`.

  `dtype` is the store's: "float32", "bfloat16" or "int8" (codes with per-chunk, per-channel
  scales, jaxsae.activations.int8; a quarter of float32's bytes). Resumes a partial store in
  `directory` made with the same settings (an int8 one bit for bit too: a chunk's scales are
  its own); refuses one made with other settings. `stop_after_chunks` ends early (as a
  preemption would), for tests. On SIGTERM it writes the chunk in flight and exits
  (jaxsae.preemption); rerunning resumes.
  """
  hooks = tuple(hooks_lib.canonical(h) for h in hooks)  # TransformerLens aliases too.
  known = set(lm.hook_names())
  unknown = [h for h in hooks if h not in known]
  if unknown:
    raise JaxsaeError(f"unknown hook(s) {unknown}; the model's hooks are {sorted(known)}")
  if not hooks:
    raise JaxsaeError("no hooks to harvest; name at least one, e.g. blocks.1.resid_post")
  windows_NxT = np.asarray(windows_NxT, np.int32)
  rows = plan_rows(windows_NxT, lm.tokenizer.separator_id, skip_separator, skip_first)
  fingerprint = {
    "tokenizer": {
      "kind": type(lm.tokenizer).__name__,
      "vocab_size": int(lm.tokenizer.vocab_size),
      "separator_id": int(lm.tokenizer.separator_id),
    },
    "n_windows": int(len(windows_NxT)),
    "seq_len": int(windows_NxT.shape[1]),
    "skip_separator": bool(skip_separator),
    "skip_first": int(skip_first),
    # A resumed partial store must be forwarded in the same batches: another size compiles to
    # other kernels and rounds differently (a complete store is read the same either way).
    "batch_size": int(batch_size),
    "windows_sha256": hashlib.sha256(windows_NxT.tobytes()).hexdigest(),
  }
  widths = hook_widths(lm, hooks)
  store = _open_or_create(
    pathlib.Path(directory), widths, rows, windows_NxT, dtype, chunk_rows,
    {**fingerprint, **(metadata or {})},
  )  # fmt: skip
  start = int(store.meta["rows_written"])
  if store.meta.get("complete"):
    return store
  # The first window of the batch holding row `start`, and how many of its rows are already
  # stored. The batches are those of an uninterrupted run: a batch of another size compiles to
  # other kernels and rounds differently. Every row stored but the store not marked complete
  # (killed in between): nothing left to forward.
  if start < len(rows):
    first_window = int(rows[start, 0]) // batch_size * batch_size
  else:
    first_window = len(windows_NxT)
  window_starts = np.searchsorted(rows[:, 0], np.arange(len(windows_NxT) + 1))
  drop = start - int(window_starts[first_window])
  capture = capture_fn(lm.config, hooks)
  buffers = {h: [] for h in hooks}
  buffered, written, chunks_done = 0, start, 0
  bar = run_log.progress(store.n_rows, start, desc="harvest") if progress else None
  pending: list = []  # The previous chunk in flight: (futures, its arrays, rows_written after).

  # store.json is rewritten (and fsynced) after each chunk by one background thread, in order,
  # while the next batches compute (done inline it cost the main job's harvest 12%).
  recorder, recorded = concurrent.futures.ThreadPoolExecutor(1), collections.deque()

  def settle():
    """Wait for the chunk in flight, then have it recorded in store.json."""
    for futures, _, rows_written, size in pending:
      for future in futures:
        future.result()
      recorded.append(recorder.submit(store.update_meta, rows_written=rows_written))
      if bar is not None:
        bar.update(size)
    pending.clear()

  def record():
    """Wait until store.json counts every chunk settled so far (raising its errors: a full
    disk). Before each chunk's writes, so a kill finds the same counts as with inline writes."""
    while recorded:
      recorded.popleft().result()

  def dispatch(w0):
    return capture(lm.params, jnp.asarray(windows_NxT[w0 : w0 + batch_size]))

  # Overlap: batch i+1 is computing while batch i is picked and its chunk is written.
  starts = range(first_window, len(windows_NxT), batch_size)
  ahead = dispatch(starts[0]) if len(starts) else None
  with preemption.Guard("harvest", unit="batch") as guard:  # Left once the chunks are on disk.
    for i, w0 in enumerate(starts):
      acts = ahead
      ahead = dispatch(starts[i + 1]) if i + 1 < len(starts) else None
      acts = jax.device_get(acts)
      lo, hi = window_starts[w0], window_starts[min(w0 + batch_size, len(windows_NxT))]
      sel = rows[lo:hi]
      for h in hooks:
        picked = acts[h][sel[:, 0] - w0, sel[:, 1]]
        buffers[h].append(picked[drop:])
      buffered += len(sel) - drop
      drop = 0
      while buffered >= store.chunk_rows or (buffered and written + buffered == store.n_rows):
        size = min(store.chunk_rows, buffered)
        record()
        futures, arrays = [], []
        for h in hooks:
          block = np.concatenate(buffers[h])
          arrays.append(block[:size])  # Cast (or quantized) to the stored dtype by the store.
          futures.append(store.write_chunk_async(h, written // store.chunk_rows, arrays[-1]))
          buffers[h] = [block[size:]]
        written += size
        buffered -= size
        settle()
        pending.append((futures, arrays, written, size))
        chunks_done += 1
        if stop_after_chunks is not None and chunks_done >= stop_after_chunks:
          settle()
          record()
          return store
      # On SIGTERM: the rows past the last whole chunk are forwarded again when resumed.
      if i + 1 < len(starts) and guard.should_stop(w0 // batch_size):
        settle()
        record()
        guard.stopped(w0 // batch_size, f"{written} of {store.n_rows} rows in {store.directory}")
        break
    settle()
    record()
  recorder.shutdown()
  if bar is not None:
    bar.close()
  scales = {h: _scale(store, h) for h in hooks}
  store.update_meta(complete=True, scale=scales)
  return store


def hook_widths(lm: LanguageModel, hooks: tuple[str, ...]) -> dict[str, int]:
  """Each hook's activation width, from an abstract forward pass."""
  capture = capture_fn(lm.config, hooks)
  shapes = jax.eval_shape(capture, lm.params, jax.ShapeDtypeStruct((1, 2), jnp.int32))
  for h, s in shapes.items():
    if len(s.shape) != 3:
      raise JaxsaeError(
        f"hook {h!r} has per-token shape {s.shape[2:]}; harvest hooks with one vector per "
        "token (resid_*, attn.in, attn.out, mlp.*), not per-head or pattern hooks"
      )
  return {h: int(s.shape[-1]) for h, s in shapes.items()}


def _scale(store: ActivationStore, hook: str, samples: int = 8192) -> float:
  """The SAE input scale c (E‖c·x‖² = d, `normalization.estimate_scale`) on an evenly spaced
  sample of the stored rows, recorded with the store. The SAE trainer estimates c with the same
  function on its own seeded sample (data.normalization_samples): same meaning, not the same
  rows, so not the same value to the bit."""
  index = np.linspace(0, store.n_rows - 1, min(samples, store.n_rows)).astype(np.int64)
  return normalization.estimate_scale(store.gather(hook, np.unique(index)))


_RESUME_ONLY = ("batch_size",)  # Fingerprint keys that matter to resuming a partial store only.


def _open_or_create(directory, widths, rows, windows, dtype, chunk_rows, metadata):
  if (directory / "store.json").is_file():
    store = ActivationStore.open(directory)
    expected = {"hooks": widths, "n_rows": len(rows), "dtype": dtype, **metadata}
    # Settings that only decide how a partial store goes on do not bar reusing a complete one.
    checked = [k for k in expected if not (k in _RESUME_ONLY and store.meta.get("complete"))]
    mismatch = [k for k in checked if store.meta.get(k) != expected[k]]
    if mismatch:
      raise JaxsaeError(
        f"{directory} holds a store harvested with other settings ({', '.join(mismatch)}); "
        "use another directory or delete it to start over"
      )
    return store
  return ActivationStore.create(
    directory,
    hooks=widths,
    n_rows=len(rows),
    rows_table=rows,
    windows=windows,
    dtype=dtype,
    chunk_rows=chunk_rows,
    metadata=metadata,
  )
