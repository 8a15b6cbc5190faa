"""Saved folders (a JSON document beside a safetensors file): reading both with the checks every
loader needs — its format tag (`format_tags`), readable tensors, exactly the expected names and
shapes — and errors that say which file is wrong and how to fix it. Nothing is unpickled. Also the
fsync helpers with which a writer makes a file, or a finished directory, survive a power loss.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from jaxsae import format_tags
from jaxsae.errors import CheckpointError, DiskFullError


def read_document(path: pathlib.Path, kind: str, fix: str) -> dict:
  """The JSON document at `path`, whose "format" must name `kind` in a version this jaxsae reads
  (`format_tags.check`: the current tag, or a legacy one)."""
  try:
    doc = json.loads(path.read_text())
  except OSError as e:
    raise CheckpointError(f"cannot read {path} ({e}); {fix}") from e
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}); {fix}") from e
  if not isinstance(doc, dict):
    raise CheckpointError(
      f"{path} holds a JSON {type(doc).__name__}, not a jaxsae {kind} document; {fix}"
    )
  format_tags.check(doc, kind, str(path), fix)
  return doc


def read_tensors(
  path: pathlib.Path, expected: Mapping[str, Sequence[int]], described_by: str
) -> dict[str, np.ndarray]:
  """Every tensor of the safetensors file `path`, which must hold exactly the names and shapes
  of `expected` (as `described_by`, e.g. "its config.json", implies)."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  try:
    flat = load_file(str(path))
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(f"{path} is not a readable safetensors file ({e}); save it again") from e
  expected = {k: tuple(v) for k, v in expected.items()}
  problems = [f"missing tensor {k} {expected[k]}" for k in sorted(set(expected) - set(flat))]
  problems += [f"unexpected tensor {k}" for k in sorted(set(flat) - set(expected))]
  problems += [
    f"tensor {k} has shape {flat[k].shape}, {described_by} implies {expected[k]}"
    for k in sorted(set(flat) & set(expected))
    if flat[k].shape != expected[k]
  ]
  if problems:
    raise CheckpointError(f"{path} does not match {described_by}: " + "; ".join(problems[:10]))
  return flat


# ---- durable writes -----------------------------------------------------------------------------
def fsync_path(path: str | os.PathLike, missing_ok: bool = False) -> None:
  """fsync a file, or a directory (so the names created or renamed in it survive a power loss)."""
  try:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
  except FileNotFoundError:
    if missing_ok:
      return
    raise
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
  """fsync every file and directory under `root` (bottom up), and `root` itself."""
  for dirpath, _, filenames in os.walk(root, topdown=False):
    for name in filenames:
      path = os.path.join(dirpath, name)
      if not os.path.islink(path):
        fsync_path(path)
    fsync_path(dirpath)


def write_durable(path: str | os.PathLike, data: bytes) -> None:
  """Replace `path` with `data` atomically and durably: a temporary file beside it, flushed and
  fsynced, renamed over `path`, then the directory fsynced. After a crash or power loss the
  file holds either the old bytes or the new ones, never a mix or nothing. A full disk raises
  DiskFullError and leaves the old file."""
  path = pathlib.Path(path)
  tmp = path.with_name(f"{path.name}.tmp")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    if disk_full(e):
      raise DiskFullError(
        f"no space left on the device of {path} while writing it; its previous version is "
        "intact. Free space and rerun"
      ) from e
    raise
  fsync_path(path.parent)


def disk_full(e: BaseException) -> bool:
  """Whether `e` or one of its causes is "no space left on device" (or a full quota), from
  Python or from tensorstore (which reports it as a ValueError)."""
  seen: set[int] = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(m in str(e) for m in ("No space left on device", "Disk quota exceeded")):
      return True
    e = e.__cause__ or e.__context__
  return False
