"""The data of the SAE experiment (`jaxsae.sae.experiment`): open the activation source its
config's `data` names, synthetic known features or rows in a .npy file, as `row_sources`.

Every source returns (training rows, held-out rows); the held-out rows are for evaluation only.
With `data.target` set (a transcoder's targets) both are `PairSource`s of (input, target) rows.
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.sae.row_sources import ArraySource, PairSource
from jaxsae.sae.synthetic import SyntheticFeatures


def synthetic_features(data: ml_collections.ConfigDict) -> SyntheticFeatures:
  s = data.synthetic
  return SyntheticFeatures(
    d=s.d, n_features=s.n_features, active=s.active, noise=s.noise, seed=s.seed
  )


def open_source(data: ml_collections.ConfigDict):
  """(train, held-out) sources for `config.data`: ArraySources, or PairSources of (input,
  target) rows when `data.target` names a transcoder's targets."""
  train, held_out = _open(str(data.source), data)
  target = str(data.get("target", ""))
  if not target:
    return train, held_out
  train_y, held_out_y = _open(target, data)
  return PairSource(train, train_y), PairSource(held_out, held_out_y)


def _open(source: str, data: ml_collections.ConfigDict) -> tuple[ArraySource, ArraySource]:
  if source == "synthetic":
    features = synthetic_features(data)
    tokens = data.synthetic.tokens
    return (
      ArraySource(features.generate(tokens, stream=1)),
      ArraySource(features.generate(max(tokens // 8, 1), stream=2)),
    )
  path = pathlib.Path(source.removeprefix("npy:")).expanduser()
  if not path.is_file():
    raise JaxsaeError(f"activation file {path} does not exist; check data.source/target")
  try:
    rows = np.load(path, mmap_mode="r", allow_pickle=False)
  except ValueError as e:
    raise JaxsaeError(f"{path} is not a plain .npy array of activations ({e})") from e
  held_out = max(len(rows) // 20, 1)  # The last 5% of rows.
  return ArraySource(rows[:-held_out]), ArraySource(rows[-held_out:])
