"""Where benchmark figures come from: the machine, its usable CPUs and how busy it was."""

from __future__ import annotations

import os
import pathlib
import platform
from typing import Any

import jax


def usable_cpus() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_averages() -> list[float] | None:
  """The 1-, 5- and 15-minute load averages: other work makes every figure noisier."""
  return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  if cpuinfo.exists():
    for line in cpuinfo.read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine()


def info() -> dict[str, Any]:
  """Platform, CPU, JAX version, backend and devices."""
  return {
    "platform": platform.platform(),
    "cpu": cpu_model(),
    "cpus": usable_cpus(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device_kind": jax.devices()[0].device_kind,
    "devices": jax.device_count(),
  }
