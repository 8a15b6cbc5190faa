"""An on-disk activation store: zarr v3 arrays through tensorstore, plus JSON metadata.

    <dir>/store.json            format, model, tokenizer, hooks and widths, dtype, row count,
                                chunk size, rows written so far, complete flag, input scales
    <dir>/acts/<hook>/          (n_rows, d) float32 or bfloat16, chunks of `chunk_rows` rows
    <dir>/rows/                 (n_rows, 3) int32: window, position, token id of every row
    <dir>/windows/              (n_windows, seq_len) int32: the token windows, for contexts

A chunk is the unit of writing and of shuffled reading (blocks are read whole; random rows are
never gathered from disk). `rows_written` only advances after a chunk is on disk, so an
interrupted writer resumes at a chunk boundary without gaps or duplicates.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from jaxsae.errors import CheckpointError, JaxsaeError

FORMAT = "jaxsae-activations/1"
META_FILE = "store.json"
DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}


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
  """Atomic: write a temporary file, then rename over the old one."""
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(doc, indent=2))
  os.replace(tmp, path)


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
    if meta.get("format") != FORMAT:
      raise CheckpointError(
        f"{directory} has store format {meta.get('format')!r}, expected {FORMAT!r}; re-harvest"
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
    if hook not in self._arrays:
      self._arrays[hook] = ts.open(
        _spec(self.directory / "acts" / self.check_hook(hook)), open=True
      ).result()
    return self._arrays[hook]

  def write_rows(self, hook: str, start: int, values: np.ndarray) -> None:
    self.write_rows_async(hook, start, values).result()

  def write_rows_async(self, hook: str, start: int, values: np.ndarray):
    """Start writing rows [start, start + len(values)); the returned future's `result()` waits
    until they are on disk. `values` must not change until then."""
    return self.array(hook)[start : start + len(values)].write(values)

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

  def read_rows(self, hook: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32."""
    rows = self._read(f"{hook} rows [{start}, {stop})", self.array(hook)[start:stop].read())
    return np.asarray(rows, np.float32)

  def read_chunk(self, hook: str, index: int) -> np.ndarray:
    start = index * self.chunk_rows
    return self.read_rows(hook, start, min(start + self.chunk_rows, self.n_rows))

  def gather(self, hook: str, indices: Sequence[int]) -> np.ndarray:
    """Arbitrary rows (slow on disk: for samples, not for training batches)."""
    indices = np.asarray(indices)
    order = np.argsort(indices)
    rows = np.asarray(
      self._read(f"{len(indices)} {hook} rows", self.array(hook)[indices[order]].read()),
      np.float32,
    )
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
