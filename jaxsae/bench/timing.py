"""Wall-clock timing: warm-up calls (compilation, first-touch allocation), then the median of
repeated calls, each waited on with `jax.block_until_ready` (a no-op for torch and Python values).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds of each timed call; `seconds` is their median."""

  samples: tuple[float, ...]

  @property
  def seconds(self) -> float:
    return statistics.median(self.samples)

  @property
  def spread(self) -> float:
    """(slowest − fastest) / median: how noisy the machine was."""
    return (max(self.samples) - min(self.samples)) / self.seconds


def time_calls(run: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
  """Time `run()` (which returns what to wait on) `repeats` times after `warmup` calls."""
  if repeats < 1:
    raise ValueError(f"repeats={repeats} must be at least 1")
  for _ in range(warmup):
    jax.block_until_ready(run())
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    samples.append(time.perf_counter() - start)
  return Timing(tuple(samples))


@dataclasses.dataclass(frozen=True)
class StepTiming:
  """A timed training step: its timing, tokens per step and the losses seen."""

  timing: Timing
  batch: int
  losses: tuple[float, ...]

  @property
  def seconds(self) -> float:
    return self.timing.seconds

  @property
  def tokens_per_s(self) -> float:
    return self.batch / self.seconds
