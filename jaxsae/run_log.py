"""What a long run shows and leaves behind: a progress bar with tokens/s, and metrics as JSONL
plus TensorBoard event files in the workdir.

Only process 0 writes, so a multi-host job leaves one record.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import tqdm


def _scalar(value: Any) -> float:
  return float(np.asarray(value))


class RunLog:
  """Append scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard events in
  `<workdir>/tensorboard/`. One JSON object per line: {"step", "split", "time", **metrics}."""

  def __init__(
    self, workdir: str | pathlib.Path, tensorboard: bool = True, resume_from: int | None = None
  ):
    """`resume_from`: the step a run resumes at; records of later steps (written before the
    interruption, and about to be written again) are dropped, as is a line cut short."""
    self.workdir = pathlib.Path(workdir)
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self._active:
      self.workdir.mkdir(parents=True, exist_ok=True)
      if resume_from is not None:
        _truncate_after(self.workdir / "metrics.jsonl", resume_from)
      self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
      if tensorboard:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> None:
    if not self._active:
      return
    values = {k: _scalar(v) for k, v in metrics.items()}
    record = {"step": int(step), "split": split, "time": time.time()}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{split}/{k}", v, int(step))
      self._tb.flush()

  def histogram(self, step: int, name: str, bin_edges, counts, split: str = "train") -> None:
    """A histogram given as counts per bin: a JSONL record and a TensorBoard histogram.

    `counts` has len(bin_edges) + 1 entries: below the first edge, between edges, above the last.
    """
    if not self._active:
      return
    counts = [int(c) for c in np.asarray(counts)]
    record = {"step": int(step), "split": split, "time": time.time(), "histogram": name}
    record.update({"bin_edges": [float(e) for e in bin_edges], "counts": counts})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None and sum(counts) > 0:
      edges = np.asarray(bin_edges, np.float64)
      lows = np.concatenate([[edges[0] - 1.0], edges])
      highs = np.concatenate([edges, [edges[-1] + 1.0]])
      centers = (lows + highs) / 2
      values = np.repeat(centers, counts)
      self._tb.add_histogram_raw(
        f"{split}/{name}",
        min=float(values.min()),
        max=float(values.max()),
        num=int(sum(counts)),
        sum=float(values.sum()),
        sum_squares=float((values**2).sum()),
        bucket_limits=list(highs),
        bucket_counts=counts,
        global_step=int(step),
      )
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> RunLog:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _truncate_after(path: pathlib.Path, step: int) -> None:
  """Keep the records of steps ≤ `step` (complete lines only); replaced atomically."""
  if not path.is_file():
    return
  kept, dropped = [], 0
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      keep = json.loads(line)["step"] <= step
    except (ValueError, KeyError, TypeError):
      keep = False  # A line cut short by a kill, or not a record.
    if keep:
      kept.append(line)
    else:
      dropped += line.strip() != ""
  if dropped:
    partial = path.with_suffix(".jsonl.partial")
    partial.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(partial, path)


def read_jsonl(
  path: str | pathlib.Path, split: str | None = None, histograms: bool = False
) -> list[dict]:
  """The scalar records (or, with `histograms`, the histogram records) of a metrics.jsonl file,
  optionally only those of one split."""
  with open(path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [
    r
    for r in records
    if (split is None or r["split"] == split) and ("histogram" in r) == histograms
  ]


def progress(total_tokens: int, done_tokens: int = 0, desc: str = "train") -> tqdm.tqdm:
  """A progress bar counted in tokens, so its rate reads tokens/s. Silent off process 0."""
  return tqdm.tqdm(
    total=total_tokens,
    initial=done_tokens,
    desc=desc,
    unit="tok",
    unit_scale=True,
    dynamic_ncols=True,
    disable=jax.process_index() != 0,
    smoothing=0.1,
  )
