"""The trainer's own loop, timed: what the loop adds to the bare step (`sae_step`).

`sae.train.train` runs on standard normal rows held in memory (an `ArraySource`, read in its
shuffled order), with the config of `sae_step.bench_config` and the main job's loop settings:
metrics every `log_every` steps (with the density histogram and dead-latent statistics), a
checkpoint every `checkpoint_every`, the progress bar. The rate is steady state: tokens between
the first and the last metrics record over the seconds between their timestamps, so compiling,
the input-scale estimate and the final save are outside it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile

import numpy as np

from jaxsae.bench import sae_step
from jaxsae.sae import train as train_lib


@dataclasses.dataclass(frozen=True)
class LoopResult:
  tokens_per_s: float
  steps_timed: int
  seconds: float


def time_train_loop(
  architecture: str,
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  steps: int = 400,
  log_every: int = 100,
  checkpoint_every: int = 1000,
  rows: int = 65_536,
  overrides: dict[str, str] | None = None,
  seed: int = 0,
  workdir: str | pathlib.Path | None = None,
) -> LoopResult:
  """Steady-state tokens/s of `steps` training steps through the trainer's loop."""
  if steps < 2 * log_every:
    raise ValueError(f"steps={steps} needs at least two metrics records of log_every={log_every}")
  config = sae_step.bench_config(
    architecture, d=d, n=n, k=k, batch=batch, steps=steps, overrides=overrides
  )
  config.train.log_every = log_every
  config.train.checkpoint_every = checkpoint_every
  data = np.random.default_rng(seed).standard_normal((max(rows, batch), d), dtype=np.float32)
  with tempfile.TemporaryDirectory() as scratch:
    folder = pathlib.Path(workdir or scratch) / "loop"
    train_lib.train(config, folder, data, progress_desc=f"loop {architecture}")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if r.get("split") == "train" and "histogram" not in r]
  first, last = train[0], train[-1]
  timed = last["step"] - first["step"]
  seconds = last["time"] - first["time"]
  return LoopResult(timed * batch / seconds, timed, seconds)
