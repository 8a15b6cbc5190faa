"""An on-disk activation store: zarr v3 arrays through tensorstore, plus JSON metadata.

    <dir>/store.json            format, model, tokenizer, hooks and widths, dtype, row count,
                                chunk size, rows written so far, complete flag, input scales
    <dir>/acts/<hook>/          (n_rows, d) float32, bfloat16 or int8, chunks of `chunk_rows` rows
    <dir>/scales/<hook>/        int8 stores only: (n_chunks, d) float32, each chunk's per-channel
                                scales (jaxsae.activations.int8); codes decode to codes · scale
    <dir>/rows/                 (n_rows, 3) int32: window, position, token id of every row
    <dir>/windows/              (n_windows, seq_len) int32: the token windows, for contexts

A chunk is the unit of writing and of shuffled reading (blocks are read whole; random rows are
never gathered from disk). `rows_written` only advances after a chunk is on disk, so an
interrupted writer resumes at a chunk boundary without gaps or duplicates. Reads always return
float32 (int8 codes decoded); `array(hook)` is the raw stored array.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from jaxsae import format_tags
from jaxsae.activations import int8
from jaxsae.errors import CheckpointError, DiskFullError, JaxsaeError
from jaxsae.saved import disk_full, write_durable

FORMAT = format_tags.tag("activations")
META_FILE = "store.json"
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "int8": "int8"}
INT8_SCALES = "per_chunk_channel"  # store.json "scales" of an int8 store: see int8.py.


def _spec(path: pathlib.Path, shape=None, dtype=None, chunk=None) -> dict:
  spec: dict[str, Any] = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
  if shape is not None:
    spec["metadata"] = {
      "shape": list(shape),
      "data_type": dtype,
      "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
    }
  return spec


def _write_json(path: pathlib.Path, doc: dict) -> None:
  """Atomic and durable (`saved.write_durable`): old or new document, even after power loss.
  Chunk files need nothing more: tensorstore's file driver fsyncs each one and its directory
  before a write's future completes (its `file_io_sync` default)."""
  write_durable(path, json.dumps(doc, indent=2).encode())


class ActivationStore:
  """Read and write one store directory. Create with `create`, open with `open`."""

  def __init__(self, directory: pathlib.Path, meta: dict):
    self.directory, self.meta = directory, meta
    self._arrays: dict[str, Any] = {}

  # ---- lifecycle ----------------------------------------------------------------------------
  @classmethod
  def create(
    cls,
    directory: str | pathlib.Path,
    *,
    hooks: dict[str, int],
    n_rows: int,
    rows_table: np.ndarray,
    windows: np.ndarray,
    dtype: str = "float32",
    chunk_rows: int = 4096,
    metadata: dict | None = None,
  ) -> ActivationStore:
    """A new, empty store for `n_rows` rows at each hook ({name: width})."""
    if dtype not in DTYPES:
      raise JaxsaeError(f"store dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if n_rows < 1:
      raise JaxsaeError("the store would hold no rows; harvest more windows")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chunk_rows = min(chunk_rows, n_rows)
    for hook, d in hooks.items():
      ts.open(
        _spec(directory / "acts" / hook, (n_rows, d), DTYPES[dtype], (chunk_rows, d)),
        create=True,
        delete_existing=True,
      ).result()
      if dtype == "int8":  # One row of scales per chunk, one file per row: written with it.
        n_chunks = -(-n_rows // chunk_rows)
        ts.open(
          _spec(directory / "scales" / hook, (n_chunks, d), "float32", (1, d)),
          create=True,
          delete_existing=True,
        ).result()
    rows = ts.open(
      _spec(directory / "rows", (n_rows, 3), "int32", (chunk_rows, 3)),
      create=True,
      delete_existing=True,
    ).result()
    rows.write(np.asarray(rows_table, np.int32)).result()
    win = ts.open(
      _spec(
        directory / "windows", windows.shape, "int32", (min(1024, len(windows)), windows.shape[1])
      ),
      create=True,
      delete_existing=True,
    ).result()
    win.write(np.asarray(windows, np.int32)).result()
    meta = {
      "format": FORMAT,
      "hooks": dict(hooks),
      "n_rows": int(n_rows),
      "chunk_rows": int(chunk_rows),
      "dtype": dtype,
      **({"scales": INT8_SCALES} if dtype == "int8" else {}),
      "rows_written": 0,
      "complete": False,
      **(metadata or {}),
    }
    _write_json(directory / META_FILE, meta)
    return cls(directory, meta)

  @classmethod
  def open(cls, directory: str | pathlib.Path) -> ActivationStore:
    directory = pathlib.Path(directory)
    meta_file = directory / META_FILE
    if not meta_file.is_file():
      raise CheckpointError(
        f"no activation store at {directory} ({META_FILE} missing); harvest one first"
      )
    try:
      meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
      raise CheckpointError(f"{meta_file} is not valid JSON ({e}); re-harvest the store") from e
    if not isinstance(meta, dict):
      raise CheckpointError(f"{meta_file} is not a store's metadata; re-harvest the store")
    format_tags.check(meta, "activations", f"the store at {directory}", "re-harvest it")
    if meta.get("dtype") not in DTYPES:
      raise CheckpointError(
        f"{meta_file} has dtype {meta.get('dtype')!r}, not one of {sorted(DTYPES)}; re-harvest"
      )
    if meta["dtype"] == "int8" and meta.get("scales") != INT8_SCALES:
      raise CheckpointError(
        f"{meta_file} is an int8 store with scales {meta.get('scales')!r}, expected "
        f"{INT8_SCALES!r}; re-harvest"
      )
    return cls(directory, meta)

  def update_meta(self, **fields) -> None:
    self.meta.update(fields)
    _write_json(self.directory / META_FILE, self.meta)

  # ---- properties ---------------------------------------------------------------------------
  @property
  def hooks(self) -> list[str]:
    return list(self.meta["hooks"])

  @property
  def n_rows(self) -> int:
    return int(self.meta["n_rows"])

  @property
  def chunk_rows(self) -> int:
    return int(self.meta["chunk_rows"])

  @property
  def n_chunks(self) -> int:
    return -(-self.n_rows // self.chunk_rows)

  @property
  def dtype(self) -> str:
    return str(self.meta["dtype"])

  @property
  def quantized(self) -> bool:
    """Whether rows are stored as int8 codes with per-chunk, per-channel scales."""
    return self.dtype == "int8"

  def stored_bytes(self) -> int:
    """Bytes on disk of the activations: every file under acts/ and scales/."""
    return sum(
      p.stat().st_size
      for sub in ("acts", "scales")
      for p in (self.directory / sub).rglob("*")
      if p.is_file()
    )

  def width(self, hook: str) -> int:
    return int(self.meta["hooks"][self.check_hook(hook)])

  def check_hook(self, hook: str) -> str:
    if hook not in self.meta["hooks"]:
      raise JaxsaeError(f"the store at {self.directory} has no hook {hook!r}; it has {self.hooks}")
    return hook

  def require_complete(self) -> None:
    if not self.meta.get("complete"):
      raise JaxsaeError(
        f"the store at {self.directory} is incomplete ({self.meta['rows_written']} of "
        f"{self.n_rows} rows); rerun the harvest to finish it"
      )

  # ---- I/O ----------------------------------------------------------------------------------
  def array(self, hook: str):
    """The raw stored array of `hook` (int8 codes in an int8 store)."""
    if hook not in self._arrays:
      self._arrays[hook] = ts.open(
        _spec(self.directory / "acts" / self.check_hook(hook)), open=True
      ).result()
    return self._arrays[hook]

  def scales_array(self, hook: str):
    """An int8 store's (n_chunks, d) float32 scales of `hook`."""
    if not self.quantized:
      raise JaxsaeError(f"the {self.dtype} store at {self.directory} has no scales")
    key = "scales/" + self.check_hook(hook)
    if key not in self._arrays:
      self._arrays[key] = ts.open(_spec(self.directory / "scales" / hook), open=True).result()
    return self._arrays[key]

  def write_rows(self, hook: str, start: int, values: np.ndarray) -> None:
    self.write_rows_async(hook, start, values).result()

  def write_rows_async(self, hook: str, start: int, values: np.ndarray) -> Writes:
    """Start writing rows [start, start + len(values)); the returned object's `result()` waits
    until they are on disk. `values` must not change until then.

    Rows are cast to the stored dtype. An int8 store takes whole chunks only, starting at a
    chunk boundary (the store's last chunk may be short), and quantizes each with its own
    scales (jaxsae.activations.int8), written beside it.
    """
    values = np.asarray(values)
    if not self.quantized:
      values = np.asarray(values, self.array(hook).dtype.numpy_dtype)
      write = self.array(hook)[start : start + len(values)].write(values)
      return Writes([write], [values], self.directory)
    stop = start + len(values)
    if start < 0 or stop > self.n_rows:
      raise JaxsaeError(f"rows [{start}, {stop}) are outside the store's {self.n_rows} rows")
    if start % self.chunk_rows or not (stop % self.chunk_rows == 0 or stop == self.n_rows):
      raise JaxsaeError(
        f"an int8 store is written in whole chunks of {self.chunk_rows} rows (the last may be "
        f"short), each quantized with its own scales; rows [{start}, {stop}) of {self.n_rows} "
        "are not whole chunks"
      )
    futures, kept = [], []
    for lo in range(start, stop, self.chunk_rows):
      q, delta = int8.quantize(values[lo - start : lo - start + self.chunk_rows])
      index = lo // self.chunk_rows
      futures.append(self.array(hook)[lo : lo + len(q)].write(q))
      futures.append(self.scales_array(hook)[index : index + 1].write(delta[None]))
      kept += [q, delta]
    return Writes(futures, kept, self.directory)

  def write_chunk_async(self, hook: str, index: int, values: np.ndarray) -> Writes:
    """Start writing chunk `index` (all its rows, float; quantized in an int8 store), as
    `write_rows_async`."""
    start = index * self.chunk_rows
    expected = min(self.chunk_rows, self.n_rows - start)
    if len(values) != expected:
      raise JaxsaeError(f"chunk {index} of {self.directory} has {expected} rows, not {len(values)}")
    return self.write_rows_async(hook, start, values)

  def _read(self, what: str, future):
    """`future.result()`, with tensorstore's errors on damaged files as a CheckpointError."""
    try:
      return future.result()
    except ValueError as e:  # tensorstore: truncated, garbled or missing chunk files.
      raise CheckpointError(
        f"cannot read {what} of the activation store {self.directory}: "
        f"{' '.join(str(e).split())[:300]}. The store is damaged: delete {self.directory} "
        "and harvest it again"
      ) from e

  def _decode(self, hook: str, what: str, raw: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 of raw stored `rows` (sorted row indices): int8 codes times their chunk's scales."""
    if not self.quantized:
      return np.asarray(raw, np.float32)
    chunk = rows // self.chunk_rows
    used, which = np.unique(chunk, return_inverse=True)
    if len(used) == 0:
      return np.zeros(raw.shape, np.float32)
    if used[-1] - used[0] + 1 == len(used):  # Contiguous chunks (always, from read_rows).
      index = self.scales_array(hook)[int(used[0]) : int(used[-1]) + 1]
    else:
      index = self.scales_array(hook)[used]
    delta = np.asarray(self._read(f"the scales of {what}", index.read()), np.float32)
    return int8.dequantize(raw, delta[which])

  def read_rows(self, hook: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32."""
    what = f"{hook} rows [{start}, {stop})"
    raw = self._read(what, self.array(hook)[start:stop].read())
    return self._decode(hook, what, raw, np.arange(start, start + len(raw)))

  def read_chunk(self, hook: str, index: int) -> np.ndarray:
    start = index * self.chunk_rows
    return self.read_rows(hook, start, min(start + self.chunk_rows, self.n_rows))

  def gather(self, hook: str, indices: Sequence[int]) -> np.ndarray:
    """Arbitrary rows as float32 (slow on disk: for samples, not for training batches)."""
    indices = np.asarray(indices)
    order = np.argsort(indices)
    what = f"{len(indices)} {hook} rows"
    raw = self._read(what, self.array(hook)[indices[order]].read())
    rows = self._decode(hook, what, raw, indices[order])
    out = np.empty_like(rows)
    out[order] = rows
    return out

  def rows_table(self, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(window, position, token) of rows [start, stop)."""
    table = ts.open(_spec(self.directory / "rows"), open=True).result()
    return np.asarray(self._read("the rows table", table[start : stop or self.n_rows].read()))

  def windows(self) -> np.ndarray:
    return np.asarray(
      ts.open(_spec(self.directory / "windows"), open=True).result().read().result()
    )


class Writes:
  """Writes in flight: `result()` waits for all of them. Holds the arrays being written (the
  cast or quantized copies), which must outlive the writes."""

  def __init__(self, futures: list, arrays: list, directory: pathlib.Path | None = None):
    self.futures, self.arrays, self.directory = futures, arrays, directory

  def result(self) -> None:
    for future in self.futures:
      try:
        future.result()
      except Exception as e:
        if disk_full(e):
          raise DiskFullError(
            f"no space left on the device of the activation store {self.directory}; the rows "
            "store.json counts as written are intact. Free space and rerun the same command "
            "to resume"
          ) from e
        raise
