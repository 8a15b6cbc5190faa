"""Activation-data throughput: the model's plain forward, harvesting into a store, store reads.

  forward   the jitted forward (logits) over token windows, batch by batch: the reference
  capture   the harvest's own jitted capture function, results copied to the host, no store
  harvest   `jaxsae.activations.harvest.harvest` into a fresh temporary store: capture, row
            selection, writes, metadata and the input-scale pass, all included

Tokens/s count every position of every window (the harvest skips separator rows but runs the
model over them). A capture at an early hook skips the later blocks (XLA drops what no output
needs), so capturing every block's `resid_post` is the like-for-like comparison with the
forward. The three are timed round robin (`jaxsae.bench.paired`). Store reads go through the
readers the SAE trainer uses: whole chunks in order, and `StoreSource.train_batches` (shuffled
chunk groups) for one epoch; a store just written is usually in the OS page cache, so these
are read rates of decoding and copying, not of the disk.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.activations import harvest as harvest_lib
from jaxsae.activations.reader import StoreSource
from jaxsae.activations.store import ActivationStore
from jaxsae.bench.paired import time_round_robin
from jaxsae.bench.timing import time_calls
from jaxsae.errors import JaxsaeError
from jaxsae.models.language_model import LanguageModel
from jaxsae.text import pipeline

TARGET_HARVEST_RATIO = 0.9  # Harvest at least 90% of the plain forward's tokens/s (issue 7).


def corpus_windows(corpus, tokenizer, seq_len: int, n: int, split: str = "validation", seed=0):
  """(n, seq_len + 1) int32 windows of a split of `corpus`, drawn by seed: for a model,
  `text.model_corpus.for_model(lm)` (the split it was trained with); for an LM config being
  trained, `text.corpus.from_config(config.data)`."""
  windows = pipeline.load_split(corpus, split, tokenizer, seq_len).windows
  if len(windows) < n:
    raise JaxsaeError(f"the {split} split holds {len(windows)} windows of {seq_len}, not {n}")
  return pipeline.sample_windows(windows, n, seed, split)


def _batches(windows_NxT: np.ndarray, batch_size: int) -> list[jax.Array]:
  if len(windows_NxT) % batch_size:
    raise JaxsaeError(
      f"{len(windows_NxT)} windows are not a whole number of batches of {batch_size}"
    )
  return [
    jnp.asarray(windows_NxT[i : i + batch_size]) for i in range(0, len(windows_NxT), batch_size)
  ]


def harvest_paths(
  lm: LanguageModel,
  windows_NxT: np.ndarray,
  hook_sets: dict[str, Sequence[str]],
  *,
  batch_size: int = 32,
  chunk_rows: int = 8192,
  dtype: str = "float32",
  repeats: int = 3,
  tmp_root: str | pathlib.Path | None = None,
) -> list[dict[str, Any]]:
  """Rows for the plain forward, and capture and harvest at each named hook set.

  windows_NxT: (N, T) int32 token windows, N a multiple of batch_size.
  hook_sets: {label: hooks}, e.g. {"1 hook": ["blocks.1.resid_post"], "every block": [...]}.
  """
  windows_NxT = np.asarray(windows_NxT, np.int32)
  batches = _batches(windows_NxT, batch_size)
  n_tokens = int(windows_NxT.size)
  forward = jax.jit(lambda params, tokens: lm.module.apply({"params": params}, tokens))

  def run_forward():
    return [forward(lm.params, b) for b in batches]

  calls = {"forward": run_forward}
  for label, hooks in hook_sets.items():
    capture = harvest_lib.capture_fn(lm.config, tuple(hooks))
    calls[f"capture/{label}"] = lambda capture=capture: [
      jax.device_get(capture(lm.params, b)) for b in batches
    ]

    def run_harvest(hooks=tuple(hooks)):
      with tempfile.TemporaryDirectory(dir=tmp_root) as directory:
        store = harvest_lib.harvest(
          lm, windows_NxT, hooks, directory, batch_size=batch_size, chunk_rows=chunk_rows,
          dtype=dtype, progress=False,
        )  # fmt: skip
        return store.n_rows

    calls[f"harvest/{label}"] = run_harvest
  timings = time_round_robin(calls, repeats=repeats, warmup=1)
  rows_per_harvest = len(
    harvest_lib.plan_rows(windows_NxT, lm.tokenizer.separator_id, skip_separator=True)
  )
  reference = n_tokens / timings["forward"][0].seconds
  rows = [_row("forward", "—", (), n_tokens, timings["forward"], reference)]
  for label, hooks in hook_sets.items():
    for path in ("capture", "harvest"):
      row = _row(path, label, hooks, n_tokens, timings[f"{path}/{label}"], reference)
      if path == "harvest":
        width = sum(harvest_lib.hook_widths(lm, tuple(hooks)).values())
        seconds = timings[f"harvest/{label}"][0].seconds
        row["rows_per_s"] = rows_per_harvest / seconds
        row["write_mb_per_s"] = rows_per_harvest * width * _itemsize(dtype) / seconds / 1e6
        row["target_met"] = row["ratio_to_forward"] >= TARGET_HARVEST_RATIO
      rows.append(row)
  return rows


def _itemsize(dtype: str) -> int:
  """Bytes per stored value (an int8 store's per-chunk scales add d·4 bytes per chunk: left out)."""
  return {"bfloat16": 2, "int8": 1}.get(dtype, 4)


def _row(path, label, hooks, n_tokens, timing, reference) -> dict[str, Any]:
  wall, _ = timing
  tokens_per_s = n_tokens / wall.seconds
  return {
    "path": path,
    "hooks": label,
    "hook_names": list(hooks),
    "tokens": n_tokens,
    "seconds": wall.seconds,
    "tokens_per_s": tokens_per_s,
    "ratio_to_forward": tokens_per_s / reference,
    "spread": wall.spread,
  }


def make_store(
  directory: str | pathlib.Path,
  n_rows: int,
  width: int,
  *,
  chunk_rows: int = 8192,
  dtype: str = "float32",
  seed: int = 0,
) -> ActivationStore:
  """A complete store of `n_rows` Gaussian rows at one hook ("bench"), written chunk by chunk."""
  rng = np.random.default_rng(seed)
  rows_table = np.zeros((n_rows, 3), np.int32)
  rows_table[:, 1] = np.arange(n_rows) % 128
  store = ActivationStore.create(
    directory, hooks={"bench": width}, n_rows=n_rows, rows_table=rows_table,
    windows=np.zeros((1, 128), np.int32), dtype=dtype, chunk_rows=chunk_rows,
  )  # fmt: skip
  for start in range(0, n_rows, store.chunk_rows):
    size = min(store.chunk_rows, n_rows - start)
    block = rng.standard_normal((size, width), np.float32)
    store.write_rows("bench", start, block)  # Cast (or quantized) to the stored dtype.
  store.update_meta(rows_written=n_rows, complete=True, scale={"bench": 1.0})
  return store


def store_reads(
  store: ActivationStore,
  hook: str,
  *,
  batch_size: int = 4096,
  shuffle_chunks: int = 8,
  repeats: int = 3,
) -> list[dict[str, Any]]:
  """Rows/s and MB/s (float32 delivered, and stored bytes) of a sequential pass over every chunk
  and of one shuffled epoch of `StoreSource.train_batches` (a fresh seed each repeat)."""
  store.require_complete()
  width = store.width(hook)
  stored_bytes = _itemsize(store.meta["dtype"])

  def sequential():
    for index in range(store.n_chunks):
      store.read_chunk(hook, index)

  source = StoreSource(store, hook, shuffle_chunks=shuffle_chunks)
  per_epoch = len(source) // batch_size
  if per_epoch < 1:
    raise JaxsaeError(f"the store's {len(source)} rows are fewer than one batch of {batch_size}")
  seeds = iter(range(1 << 30))

  def shuffled():
    batches = source.train_batches(batch_size, seed=next(seeds))
    for _ in range(per_epoch):
      next(batches)

  rows = []
  for mode, run, n_rows in (
    ("sequential chunks", sequential, store.n_rows),
    (f"shuffled batches of {batch_size}", shuffled, per_epoch * batch_size),
  ):
    timing = time_calls(run, repeats=repeats, warmup=1)
    rows.append(
      {
        "mode": mode,
        "rows": n_rows,
        "width": width,
        "dtype": store.meta["dtype"],
        "chunk_rows": store.chunk_rows,
        "seconds": timing.seconds,
        "rows_per_s": n_rows / timing.seconds,
        "mb_per_s": n_rows * width * 4 / timing.seconds / 1e6,
        "stored_mb_per_s": n_rows * width * stored_bytes / timing.seconds / 1e6,
        "spread": timing.spread,
      }
    )
  return rows


def store_throughput(
  n_rows: int,
  width: int,
  *,
  chunk_rows: int = 8192,
  dtype: str = "float32",
  batch_size: int = 4096,
  repeats: int = 3,
  tmp_root: str | pathlib.Path | None = None,
) -> list[dict[str, Any]]:
  """`store_reads` of a fresh temporary store of `n_rows` x `width` (deleted afterwards)."""
  with tempfile.TemporaryDirectory(dir=tmp_root) as directory:
    store = make_store(directory, n_rows, width, chunk_rows=chunk_rows, dtype=dtype)
    return store_reads(store, "bench", batch_size=batch_size, repeats=repeats)
