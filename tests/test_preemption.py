"""SIGTERM (a preemption notice): the loop finishes its step, saves, exits with code 143 and a
line naming the step and the resume command; resuming ends bitwise equal to an uninterrupted
run. One process (tiny jobs of jaxsae/testing/jobs.py), a second SIGTERM during the save, and two
processes of which only one is signalled."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from jaxsae import preemption
from jaxsae.testing import faults, jobs, progress, results
from jaxsae.text.corpus import stdlib_root

LINE = re.compile(
  r"stopped by SIGTERM after (?:step|batch) (\d+); saved (.*)\. Exit code 143\. Resume"
)


# ---- the guard, in this process -----------------------------------------------------------------
def test_guard_counts_signals_restores_the_handler_and_exits_143():
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(preemption.Preempted) as raised:
    with preemption.Guard("test loop") as guard:
      assert not guard.should_stop(1)
      os.kill(os.getpid(), signal.SIGTERM)
      os.kill(os.getpid(), signal.SIGTERM)  # A second one is only counted.
      assert guard.should_stop(2) and guard.signals == 2
      guard.stopped(2, "everything")
  assert raised.value.code == preemption.EXIT_CODE == 143
  assert raised.value.step == 2 and LINE.search(str(raised.value)), str(raised.value)
  assert signal.getsignal(signal.SIGTERM) == before


def test_a_signal_after_the_last_check_still_exits_143_once_the_loop_is_done():
  with pytest.raises(preemption.Preempted) as raised:
    with preemption.Guard("test loop"):
      os.kill(os.getpid(), signal.SIGTERM)  # During the last step: the loop just ends.
  assert raised.value.code == 143 and "during the last step" in str(raised.value)


def test_guard_without_a_signal_changes_nothing():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.Guard("test loop") as guard:
    assert not guard.should_stop(1)
  assert signal.getsignal(signal.SIGTERM) == before


# ---- one process ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return faults.child_env(devices=2, cache_dir=tmp_path_factory.mktemp("jax_cache"))


def _start(kind, workdir, log, env):
  command = faults.job_command(kind, workdir)
  with open(log, "a") as out:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(proc, log, timeout=300) -> int:
  try:
    return proc.wait(timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise AssertionError(f"ran past {timeout}s:\n{log.read_text()[-3000:]}") from None


def _sigterm_after_steps(kind, workdir, log, env, steps, *, during_save=False):
  """Start the job, SIGTERM it once it has logged `steps` train steps; with `during_save`, a
  second SIGTERM while the save that follows is being written (the child is SIGSTOPped when
  Orbax's temporary directory appears, signalled, and continued). Returns (exit code, whether
  the second signal landed mid-write)."""
  stale = set(progress.checkpoint_state(workdir)[1])
  proc = _start(kind, workdir, log, env)
  t0, sent, mid_write = time.monotonic(), False, False
  while proc.poll() is None and time.monotonic() - t0 < 300:
    if not sent and len(progress.logged_steps(progress.metrics_lines(workdir))) >= steps:
      proc.send_signal(signal.SIGTERM)
      sent = True
    elif sent and during_save and set(progress.checkpoint_state(workdir)[1]) - stale:
      proc.send_signal(signal.SIGSTOP)
      faults.wait_stopped(proc.pid)
      mid_write = bool(set(progress.checkpoint_state(workdir)[1]) - stale)
      proc.send_signal(signal.SIGTERM)
      proc.send_signal(signal.SIGCONT)
      during_save = False
    time.sleep(0.002)
  return _wait(proc, log), mid_write


def _check_stopped(rc, log, workdir) -> int:
  text = log.read_text()
  assert rc == preemption.EXIT_CODE, text[-3000:]
  (match,) = LINE.findall(text)
  step = int(match[0])
  assert f"checkpoint step {step} in {workdir / 'checkpoints'}" == match[1]
  assert "python" in text.split("Resume with the same command: ")[1].split("\n")[0]
  steps, partial = progress.checkpoint_state(workdir)
  assert max(steps) == step and not partial, (steps, partial)
  return step


@pytest.mark.slow
def test_sigterm_saves_the_next_step_and_resumes_bitwise(env, tmp_path):
  reference = tmp_path / "reference"
  faults.run_to_end("lm", reference, tmp_path / "reference.txt", env)
  workdir, log = tmp_path / "job", tmp_path / "log.txt"
  rc, _ = _sigterm_after_steps("lm", workdir, log, env, steps=5)
  step = _check_stopped(rc, log, workdir)
  assert step < jobs.STEPS["lm"]
  faults.run_to_end("lm", workdir, log, env)
  assert results.compare("lm", reference, workdir) == []


@pytest.mark.slow
def test_second_sigterm_during_the_save_is_deferred(env, tmp_path):
  reference = tmp_path / "reference"
  faults.run_to_end("sae", reference, tmp_path / "reference.txt", env)
  workdir, log = tmp_path / "job", tmp_path / "log.txt"
  rc, mid_write = _sigterm_after_steps("sae", workdir, log, env, steps=8, during_save=True)
  _check_stopped(rc, log, workdir)
  assert mid_write, log.read_text()[-3000:]  # The second signal did land during the write.
  faults.run_to_end("sae", workdir, log, env)
  assert results.compare("sae", reference, workdir) == []


@pytest.mark.slow
def test_sigterm_during_a_harvest_writes_the_chunk_and_resumes_identically(env, tmp_path):
  reference = tmp_path / "reference"
  faults.run_to_end("harvest", reference, tmp_path / "reference.txt", env)
  workdir, log = tmp_path / "job", tmp_path / "log.txt"
  proc = _start("harvest", workdir, log, env)
  t0 = time.monotonic()
  while proc.poll() is None and time.monotonic() - t0 < 300:
    if progress.store_meta(workdir).get("rows_written", 0) >= jobs.HARVEST["chunk_rows"]:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.002)
  rc = _wait(proc, log)
  text = log.read_text()
  assert rc == 143, text[-3000:]
  (match,) = LINE.findall(text)
  meta = progress.store_meta(workdir)
  assert match[1] == f"{meta['rows_written']} of {meta['n_rows']} rows in {workdir / 'store'}"
  assert not meta["complete"] and meta["rows_written"] % jobs.HARVEST["chunk_rows"] == 0
  faults.run_to_end("harvest", workdir, log, env)
  assert results.compare("harvest", reference, workdir) == []


# ---- two processes -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("service", [True, False], ids=["preemption_service", "flag_allgather"])
def test_two_processes_one_signalled_both_save_the_same_step(tmp_path, service):
  """jax.distributed on localhost (gloo); SIGTERM reaches process 1 only. JAX's preemption
  service (or, with it off, the guard's per-step all-gather of the flag) tells process 0;
  both save the same step and exit 143."""
  from test_multiprocess import _free_port

  workdir = tmp_path / "job"

  args = [
    sys.executable, "-m", "experiments.train_lm", "--config=experiments/configs/lm_tiny.py",
    "--config.train.steps=400", "--config.train.log_every=1", "--config.train.eval_every=0",
    "--config.train.checkpoint_every=1000", f"--config.data.corpus={stdlib_root() / 'asyncio'}",
    "--config.data.validation_fraction=0.15", "--config.data.test_fraction=0.15",
    "--config.mesh.distributed=True", f"--workdir={workdir}",
  ]  # fmt: skip
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}", JAX_NUM_PROCESSES="2")
  env["JAX_ENABLE_PREEMPTION_SERVICE"] = str(service).lower()
  logs = [tmp_path / f"process{i}.txt" for i in range(2)]
  procs = []
  for i in range(2):
    with open(logs[i], "w") as out:
      procs.append(
        subprocess.Popen(
          args, cwd=REPO, env=dict(env, JAX_PROCESS_ID=str(i)), stdout=out, stderr=out
        )
      )
  t0 = time.monotonic()
  while procs[1].poll() is None and time.monotonic() - t0 < 300:
    if len(progress.logged_steps(progress.metrics_lines(workdir))) >= 3:
      procs[1].send_signal(signal.SIGTERM)
      break
    time.sleep(0.01)
  codes = [_wait(p, log) for p, log in zip(procs, logs, strict=True)]
  texts = [log.read_text() for log in logs]
  assert codes == [143, 143], "\n\n".join(t[-3000:] for t in texts)
  steps = [int(LINE.findall(t)[0][0]) for t in texts]
  assert steps[0] == steps[1] < 400, steps
  assert progress.checkpoint_state(workdir) == ([steps[0]], [])
