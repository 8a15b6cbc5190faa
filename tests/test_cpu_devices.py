"""`cli.configure_cpu_devices`: one XLA CPU device per core for experiment runs, unless XLA_FLAGS
names a count or JAX has started."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # Starts Python processes.

PROBE = """
from jaxsae import cli
first = cli.configure_cpu_devices({count})
import jax
print(first, jax.device_count(), cli.configure_cpu_devices(5), jax.device_count())
"""


def _probe(count: int, xla_flags: str | None) -> list[str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run(
    [sys.executable, "-c", PROBE.format(count=count)], env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr
  return out.stdout.split()


def test_one_device_per_core_or_the_count_asked_before_jax_starts():
  cores = str(len(os.sched_getaffinity(0)))
  assert _probe(0, None) == [cores, cores, "None", cores]  # Too late for a second count.
  assert _probe(3, None) == ["3", "3", "None", "3"]


def test_an_xla_flags_device_count_wins():
  assert _probe(3, "--xla_force_host_platform_device_count=2") == ["None", "2", "None", "2"]
