"""Saved folders (a JSON document beside a safetensors file): reading both with the checks every
loader needs — format and version, readable tensors, exactly the expected names and shapes —
and errors that say which file is wrong and how to fix it. Nothing is unpickled.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from jaxsae.errors import CheckpointError


def read_document(path: pathlib.Path, fmt: str, version: int | None, fix: str) -> dict:
  """The JSON document at `path`, whose "format" must be `fmt` and "format_version" `version`
  (unchecked when None: formats that carry the version in their name)."""
  try:
    doc = json.loads(path.read_text())
  except OSError as e:
    raise CheckpointError(f"cannot read {path} ({e}); {fix}") from e
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}); {fix}") from e
  if (
    not isinstance(doc, dict)
    or doc.get("format") != fmt
    or (version is not None and doc.get("format_version") != version)
  ):
    got = (
      f"format {doc.get('format')!r} version {doc.get('format_version')!r}"
      if isinstance(doc, dict)
      else f"a JSON {type(doc).__name__}"
    )
    raise CheckpointError(
      f"{path} has {got}; this jaxsae reads {fmt!r}"
      + (f" version {version}" if version is not None else "")
      + f"; {fix}"
    )
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
