"""Two processes on localhost (jax.distributed, gloo CPU collectives) train like one: a
language model (same losses) and a sweep of SAEs (same exported parameters)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REPO
from jaxsae.text.corpus import stdlib_root

pytestmark = pytest.mark.slow  # Subprocesses: the fast tier (-m "not slow") skips them.


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
  _run_two_and_one(args, tmp_path)
  two_losses, one_losses = _train_losses(tmp_path / "two"), _train_losses(tmp_path / "one")
  assert len(two_losses) == 6
  for a, b in zip(two_losses, one_losses, strict=True):
    assert abs(a - b) <= 1e-5 * abs(b)
  assert (tmp_path / "two" / "checkpoints" / "6").is_dir()  # Both processes wrote one checkpoint.


def _run_two_and_one(args, tmp_path: pathlib.Path) -> None:
  """Run `args` as two processes of 4 CPU devices each (workdir two/) and as one process of 8
  (workdir one/), both to completion."""
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
    )
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


def test_two_processes_train_saes_like_one_process(tmp_path):
  """A TopK SAE, data-parallel over 2 processes × 4 devices against 1 process × 8
  devices: the exported parameters agree."""
  args = [
    sys.executable, "-m", "experiments.train_sae", "--config=experiments/configs/sae_synthetic.py",
    "--config.sweep.architecture=('topk',)", "--config.train.steps=8",
    "--config.train.batch_size=256", "--config.train.log_every=4",
    "--config.train.checkpoint_every=4", "--config.data.synthetic.tokens=8192",
    "--config.data.normalization_samples=2048", "--config.data.b_dec_samples=512",
    "--config.sae.n_latents=256",
  ]  # fmt: skip
  _run_two_and_one(args, tmp_path)
  for label in ("topk",):
    two = load_file(str(tmp_path / "two" / "saes" / label / "sae.safetensors"))
    one = load_file(str(tmp_path / "one" / "saes" / label / "sae.safetensors"))
    assert sorted(two) == sorted(one)
    for name in one:
      # Cross-process and in-process all-reduces sum in different orders; Adam turns that
      # rounding of a near-zero gradient into up to ~1e-5 of a weight (lr here is 1.6e-3).
      np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert not np.array_equal(one["params/W_dec"], np.zeros_like(one["params/W_dec"]))
  assert (tmp_path / "two" / "checkpoints" / "8").is_dir()
