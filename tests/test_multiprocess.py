"""Two processes on localhost (jax.distributed, gloo CPU collectives) train like one."""

import json
import os
import socket
import subprocess
import sys

from conftest import REPO
from jaxsae.text.corpus import stdlib_root


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_losses(workdir) -> list[float]:
  with open(workdir / "metrics.jsonl") as f:
    return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def test_two_processes_match_one_process(tmp_path):
  args = [
    sys.executable, "-m", "experiments.train_lm", "--config=experiments/configs/lm_tiny.py",
    "--config.train.steps=6", "--config.train.log_every=1", "--config.train.eval_every=0",
    "--config.train.checkpoint_every=3", f"--config.data.corpus={stdlib_root() / 'asyncio'}",
    "--config.data.validation_fraction=0.15", "--config.data.test_fraction=0.15",
  ]  # fmt: skip
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}", JAX_NUM_PROCESSES="2")
  procs = [
    subprocess.Popen(
      [*args, "--config.mesh.distributed=True", f"--workdir={tmp_path / 'two'}"],
      cwd=REPO,
      env=dict(env, JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  single_env = dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8"
  )
  one = subprocess.run(
    [*args, f"--workdir={tmp_path / 'one'}"],
    cwd=REPO,
    env=single_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert one.returncode == 0, one.stderr[-3000:]
  two_losses, one_losses = _train_losses(tmp_path / "two"), _train_losses(tmp_path / "one")
  assert len(two_losses) == 6
  for a, b in zip(two_losses, one_losses, strict=True):
    assert abs(a - b) <= 1e-5 * abs(b)
  assert (tmp_path / "two" / "checkpoints" / "6").is_dir()  # Both processes wrote one checkpoint.
