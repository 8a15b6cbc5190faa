"""Round-robin timing of several calls: each repeat runs every call once, in turn, so a busy
shared machine slows them alike and their ratios stay meaningful. Wall clock and process CPU
time (all threads) are both kept; medians as in `jaxsae.bench.timing`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxsae.bench.timing import Timing


def time_round_robin(
  calls: Mapping[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1
) -> dict[str, tuple[Timing, Timing]]:
  """{name: (wall Timing, CPU Timing)} of each `call()` (waited on), after `warmup` rounds."""
  if repeats < 1:
    raise ValueError(f"repeats={repeats} must be at least 1")
  for _ in range(warmup):
    for call in calls.values():
      jax.block_until_ready(call())
  wall: dict[str, list[float]] = {name: [] for name in calls}
  cpu: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(call())
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  return {name: (Timing(tuple(wall[name])), Timing(tuple(cpu[name]))) for name in calls}
