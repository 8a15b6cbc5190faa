"""What a fault-test job has done so far, read from its files while it runs or after it died:
committed checkpoints and Orbax's temporary directories, the train steps in metrics.jsonl, and
the store's recorded rows."""

from __future__ import annotations

import json
import os
import pathlib

TMP_MARK = ".orbax-checkpoint-tmp"


def checkpoint_state(workdir: pathlib.Path) -> tuple[list[int], list[str]]:
  """(committed checkpoint steps, names of Orbax temporary directories) in <workdir>/checkpoints."""
  try:
    names = os.listdir(workdir / "checkpoints")
  except FileNotFoundError:
    return [], []
  return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if TMP_MARK in n)


def metrics_lines(workdir: pathlib.Path) -> list[str]:
  try:
    return (workdir / "metrics.jsonl").read_text().splitlines()
  except FileNotFoundError:
    return []


def logged_steps(lines: list[str]) -> list[int]:
  """The steps of the train records (a torn last line is skipped)."""
  steps = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if record.get("split") == "train" and "histogram" not in record:
      steps.append(int(record["step"]))
  return steps


def store_meta(workdir: pathlib.Path) -> dict:
  try:
    return json.loads((workdir / "store" / "store.json").read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return {}


def tmp_identities(workdir: pathlib.Path) -> set[tuple]:
  """(name, inode, ctime) of each Orbax temporary directory: a write started anew under the
  name of a killed one's leftover is still told apart."""
  found = set()
  for name in checkpoint_state(workdir)[1]:
    try:
      st = os.stat(workdir / "checkpoints" / name)
    except FileNotFoundError:
      continue
    found.add((name, st.st_ino, st.st_ctime_ns))
  return found


class Progress:
  """What this run has done so far, from its files: train steps logged since it started, and
  the store's rows_written."""

  def __init__(self, kind: str, workdir: pathlib.Path):
    self.kind, self.workdir = kind, workdir
    self.base_lines = metrics_lines(workdir)
    self.base_rows = store_meta(workdir).get("rows_written", 0)
    self._size, self._steps = -1, []

  def steps(self) -> list[int]:
    """Train steps this run logged (cached until metrics.jsonl grows)."""
    try:
      size = os.stat(self.workdir / "metrics.jsonl").st_size
    except FileNotFoundError:
      return []
    if size != self._size:
      self._size = size
      # A resuming run first drops the records after its checkpoint (`RunLog(resume_from=)`),
      # so its own lines are those after the prefix it shares with the file it found.
      lines, shared = metrics_lines(self.workdir), 0
      while shared < min(len(lines), len(self.base_lines)) and (
        lines[shared] == self.base_lines[shared]
      ):
        shared += 1
      self._steps = logged_steps(lines[shared:])
    return self._steps

  def rows(self) -> int:
    return store_meta(self.workdir).get("rows_written", 0)

  def resumed_from(self) -> int | None:
    """The step (trainers) or row (harvest) this run started at; None if not known yet."""
    if self.kind == "harvest":
      return self.base_rows
    steps = self.steps()
    return steps[0] - 1 if steps else None
