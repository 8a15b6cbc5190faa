"""Saved bridges: `bridges.safetensors` (tensors "<site>/<W_enc|b_enc|W_dec|b_dec>") beside the
JSON sidecar `bridges.json` (sites, k, widths, config, metadata)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae import format_tags, saved
from jaxsae.errors import CheckpointError
from jaxsae.sparse.bridges.config import BridgeConfig
from jaxsae.sparse.bridges.weights import Bridges

FORMAT = format_tags.tag("bridges")
CONFIG_FILE = "bridges.json"
WEIGHTS_FILE = "bridges.safetensors"


def save_bridges(
  path: str | pathlib.Path,
  bridges: Bridges,
  config: BridgeConfig | None = None,
  metadata: Mapping[str, Any] | None = None,
) -> pathlib.Path:
  """Write `bridges.safetensors` (tensors named "<site>/<W_enc|b_enc|W_dec|b_dec>") and the JSON
  sidecar `bridges.json` (sites, k, widths, config, metadata) to the folder `path`."""
  from safetensors.numpy import save_file

  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  flat = {
    f"{site}/{name}": np.asarray(jax.device_get(value), np.float32)
    for site, tensors in bridges.weights.items()
    for name, value in tensors.items()
  }
  save_file(flat, str(path / WEIGHTS_FILE))
  doc = {
    "format": FORMAT,
    "sites": list(bridges.sites),
    "k": bridges.k,
    "d_dense": bridges.d_dense,
    "d_sparse": bridges.d_sparse,
    "config": config.to_dict() if config is not None else None,
    "metadata": dict(metadata or {}),
  }
  (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
  return path


def load_bridges(path: str | pathlib.Path) -> tuple[Bridges, BridgeConfig | None]:
  """(bridges, config) from a folder written by `save_bridges`; every tensor's shape checked."""
  path = pathlib.Path(path)
  config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
  if not config_file.is_file() or not weights_file.is_file():
    raise CheckpointError(
      f"no saved bridges at {path}: expected {CONFIG_FILE} and {WEIGHTS_FILE} (written by "
      "jaxsae.sparse.bridges.save_bridges)"
    )
  doc = saved.read_document(config_file, "bridges", "save the bridges again")
  sites, dd, ds = list(doc["sites"]), int(doc["d_dense"]), int(doc["d_sparse"])
  shapes = {"W_enc": (dd, ds), "b_enc": (ds,), "W_dec": (ds, dd), "b_dec": (dd,)}
  expected = {f"{s}/{n}": shape for s in sites for n, shape in shapes.items()}
  flat = saved.read_tensors(weights_file, expected, CONFIG_FILE)
  weights = {s: {n: jnp.asarray(flat[f"{s}/{n}"]) for n in shapes} for s in sites}
  config = BridgeConfig.from_dict(doc["config"]) if doc.get("config") else None
  return Bridges(weights, tuple(sites), int(doc["k"])), config
