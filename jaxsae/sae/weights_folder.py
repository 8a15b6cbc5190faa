"""A folder of one JSON config and one safetensors file: the layout SAELens and sparsify both
save an SAE in (under their own file names). Nothing is unpickled."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from jaxsae.errors import CheckpointError


def write(
  path: str | pathlib.Path, cfg: dict, tensors: dict[str, Any], config_file: str, weights_file: str
) -> pathlib.Path:
  from safetensors.numpy import save_file

  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / weights_file))
  (path / config_file).write_text(json.dumps(cfg, indent=2))
  return path


def read(
  path: str | pathlib.Path, config_file: str, weights_file: str, kind: str, hint: str = ""
) -> tuple[dict, dict[str, np.ndarray]]:
  """(config dict, float32 tensors) of a `kind` folder ("SAELens", "sparsify"), or a
  CheckpointError naming the missing or unreadable file (`hint` is added to the first)."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  path = pathlib.Path(path)
  for f in (path / config_file, path / weights_file):
    if not f.is_file():
      raise CheckpointError(
        f"{f} is missing; a {kind} folder has {config_file} and {weights_file}{hint}"
      )
  try:
    cfg = json.loads((path / config_file).read_text())
    tensors = {k: np.asarray(v, np.float32) for k, v in load_file(str(path / weights_file)).items()}
  except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(f"{path} is not a readable {kind} folder ({e})") from e
  return cfg, tensors
