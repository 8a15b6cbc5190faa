"""A pruned circuit: the nodes kept for one task in one model, their scores and measurements.

Saved as JSON (kept channels as index lists, every node's score, the measurements); the richer
export with edges and contexts for viewing is `jaxsae.sparse.views`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxsae import format_tags
from jaxsae.errors import CheckpointError

FORMAT = format_tags.tag("circuit")


@dataclasses.dataclass(frozen=True, eq=False)
class Circuit:
  """kept: {node site: bool (width,)}; scores: {node site: float (width,)} (the learned mask
  logits tau; kept nodes are the top of this order); metrics: measurements (see `prune`)."""

  task: str
  model: str
  kept: Mapping[str, np.ndarray]
  scores: Mapping[str, np.ndarray]
  metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def n_nodes(self) -> int:
    return int(sum(np.count_nonzero(k) for k in self.kept.values()))

  def kept_nodes(self) -> list[tuple[str, int]]:
    """(site, channel) of every kept node, sites in their stored (forward) order."""
    return [(s, int(c)) for s, k in self.kept.items() for c in np.flatnonzero(k)]

  def to_dict(self) -> dict:
    return {
      "format": FORMAT,
      "task": self.task,
      "model": self.model,
      "widths": {s: int(len(k)) for s, k in self.kept.items()},
      "kept": {s: np.flatnonzero(k).tolist() for s, k in self.kept.items()},
      "scores": {
        s: np.round(np.asarray(v, np.float64), 6).tolist() for s, v in self.scores.items()
      },
      "metrics": json_ready(self.metrics),
    }

  def save(self, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
    return path

  @classmethod
  def from_dict(cls, doc: Mapping) -> Circuit:
    format_tags.check(doc, "circuit", "the document", "write circuits with Circuit.save")
    try:
      kept = {}
      for site, width in doc["widths"].items():
        k = np.zeros(int(width), bool)
        k[np.asarray(doc["kept"][site], int)] = True
        kept[site] = k
      scores = {s: np.asarray(v, np.float32) for s, v in doc["scores"].items()}
      return cls(doc["task"], doc["model"], kept, scores, doc.get("metrics", {}))
    except (KeyError, IndexError, TypeError, ValueError) as e:
      raise CheckpointError(f"corrupt circuit document ({type(e).__name__}: {e})") from e

  @classmethod
  def load(cls, path: str | pathlib.Path) -> Circuit:
    path = pathlib.Path(path)
    try:
      doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise CheckpointError(
        f"cannot read circuit {path}: {e}; pass a file Circuit.save wrote"
      ) from e
    return cls.from_dict(doc)


def json_ready(value):
  """JSON-ready copy: numpy scalars and arrays become Python numbers and lists."""
  if isinstance(value, Mapping):
    return {str(k): json_ready(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_ready(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value
