"""Kill -9 fault injection: run a tiny LM-training, SAE-training or harvesting job in a
subprocess, SIGKILL it at a chosen moment, rerun the same command until it finishes, and compare
the result with an uninterrupted run of the same job, bitwise.

  python -m jaxsae.testing.jobs --kind=lm --workdir=/tmp/j    # the child: one tiny job, to the end

Kill points (`KillPoint.at`):
  "time"              `delay` seconds after the start (may land during import or compile);
  "step"              once this run has logged `n` train steps (log_every=1), after `delay`;
  "checkpoint_write"  while the `n`-th checkpoint write this process started is in progress:
                      when Orbax's `<step>.orbax-checkpoint-tmp` directory appears the child is
                      SIGSTOPped, the directory is checked again, then SIGKILLed (if the write
                      finished in between, the child goes on to the next write);
  "save_issued"       the child SIGKILLs itself right after `Checkpointer.save` returns for its
                      `n`-th checkpoint (the asynchronous write is then in flight);
  "rows"              once this run has recorded `n` more rows in the store, after `delay`;
  "chunk_write"       the child SIGKILLs itself right after issuing its `n`-th chunk write (one
                      hook's rows of one chunk), before the write completes;
  "store_complete"    the child SIGKILLs itself just before it marks the store complete (every
                      row is recorded as written, the input scales are not).

Each child gets its own environment (`child_env`: CPU, 2 forced devices, optionally a shared
compilation cache). Used by tests/test_kill_resume.py, tests/test_preemption.py and
experiments/fault_soak.py. The child jobs are `jaxsae.testing.jobs`, their progress is read by
`jaxsae.testing.progress`, their results compared by `jaxsae.testing.results`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time

from jaxsae.testing import jobs, results
from jaxsae.testing import progress as progress_lib


@dataclasses.dataclass(frozen=True)
class KillPoint:
  """When to kill a run (the module docstring lists them)."""

  at: str  # One of the kill points of the module docstring.
  n: int = 0
  delay: float = 0.0

  def __str__(self) -> str:
    text = self.at + (f" {self.n}" if self.at not in ("time", "store_complete") else "")
    return text + (f" +{self.delay:.3f}s" if self.delay else "")


@dataclasses.dataclass
class Landing:
  """Where a kill landed, read from the job's files after the child died."""

  point: str
  killed: bool  # False: the job finished before the kill point was reached.
  seconds: float  # Since the child started.
  checkpoints: list[int]  # Committed checkpoint steps left on disk.
  partial: list[str]  # Orbax temporary directories left on disk (a write was in progress).
  logged_step: int | None  # Last train step in metrics.jsonl.
  rows_written: int | None  # The store's recorded progress.
  resumed_from: int | None = None  # The step (trainers) or row (harvest) this run started at.

  def describe(self) -> str:
    start = "" if self.resumed_from is None else f"from {self.resumed_from}, "
    if not self.killed:
      return f"{self.point}: {start}finished before the kill"
    where = [f"{self.seconds:.2f}s"]
    if self.rows_written is not None:
      where.append(f"rows_written={self.rows_written}")
    if self.logged_step is not None:
      where.append(f"logged step {self.logged_step}")
    if self.rows_written is None:
      where.append(f"checkpoints {self.checkpoints}")
    if self.partial:
      where.append(f"mid-write {', '.join(self.partial)}")
    return f"{self.point}: {start}killed at " + ", ".join(where)


@dataclasses.dataclass
class Trial:
  kind: str
  landings: list[Landing]
  mismatches: list[str]  # Empty: bitwise equal to the uninterrupted run.
  seconds: float
  final_resume: int | None = None  # Where the last (uninterrupted) rerun resumed.

  @property
  def equal(self) -> bool:
    return not self.mismatches


def child_env(devices: int = 2, cache_dir: str | pathlib.Path | None = None) -> dict[str, str]:
  """The child's environment: `devices` CPU devices and, with `cache_dir`, a persistent
  compilation cache shared by every run (populate it with an uninterrupted run first: JAX
  writes cache entries in place, so a kill mid-write could leave a torn one)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if cache_dir is not None:
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  for key in jobs.FAULT_ENVS.values():
    env.pop(key, None)
  return env


def _repo() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parents[2]


def job_command(kind: str, workdir: str | pathlib.Path) -> list[str]:
  """The command line of the child: one job of `kind` in `workdir`, to the end."""
  return [sys.executable, "-m", jobs.__name__, f"--kind={kind}", f"--workdir={workdir}"]


def _start(kind: str, workdir: pathlib.Path, log: pathlib.Path, env: dict) -> subprocess.Popen:
  command = job_command(kind, workdir)
  with open(log, "a") as out:
    return subprocess.Popen(command, cwd=_repo(), env=env, stdout=out, stderr=subprocess.STDOUT)


def _tail(log: pathlib.Path, chars: int = 3000) -> str:
  return log.read_text()[-chars:] if log.exists() else ""


def run_to_end(
  kind: str, workdir: pathlib.Path, log: pathlib.Path, env: dict | None = None, timeout: float = 300
) -> float:
  """Run the job until it finishes; its wall time. Raises if it fails."""
  workdir, log = pathlib.Path(workdir), pathlib.Path(log)
  log.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.monotonic()
  proc = _start(kind, workdir, log, env or child_env())
  try:
    rc = proc.wait(timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{kind} job in {workdir} ran past {timeout}s:\n{_tail(log)}") from None
  if rc != 0:
    raise RuntimeError(f"{kind} job in {workdir} exited with {rc}:\n{_tail(log)}")
  return time.monotonic() - t0


def wait_stopped(pid: int, timeout: float = 2.0) -> None:
  """Until every thread of the SIGSTOPped process is stopped (or the process is gone)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    states = []
    for stat in pathlib.Path(f"/proc/{pid}/task").glob("*/stat"):
      try:
        states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
      except (FileNotFoundError, IndexError):
        continue
    if all(state in ("T", "t", "Z", "X") for state in states):
      return
    time.sleep(0.0005)


def run_and_kill(
  kind: str,
  workdir: pathlib.Path,
  point: KillPoint,
  log: pathlib.Path,
  env: dict | None = None,
  timeout: float = 300,
) -> Landing:
  """Run the job and SIGKILL it at `point`; where it landed (or that the job finished first).

  "step" and "rows" count from where this run resumed; "checkpoint_write" counts the writes
  this run started (leftovers of a killed run are not writes)."""
  workdir, log = pathlib.Path(workdir), pathlib.Path(log)
  log.parent.mkdir(parents=True, exist_ok=True)
  env = dict(env or child_env())
  if point.at in jobs.FAULT_ENVS:
    env[jobs.FAULT_ENVS[point.at]] = str(point.n or 1)
  progress = progress_lib.Progress(kind, workdir)
  stale = progress_lib.tmp_identities(workdir)
  t0 = time.monotonic()
  proc = _start(kind, workdir, log, env)
  writes: set[tuple] = set()
  reached_at = None
  while proc.poll() is None:
    now = time.monotonic() - t0
    if now > timeout:
      proc.kill()
      proc.wait()
      raise RuntimeError(f"{kind} job in {workdir} ran past {timeout}s:\n{_tail(log)}")
    if reached_at is None:
      reached = False
      if point.at == "time":
        reached = True
      elif point.at == "step":
        reached = len(progress.steps()) >= point.n
      elif point.at == "rows":
        reached = progress.rows() - progress.base_rows >= point.n
      elif point.at == "checkpoint_write" and progress.steps():
        current = progress_lib.tmp_identities(workdir) - stale
        writes |= {(name, ino) for name, ino, _ in current}
        if current and len(writes) >= point.n:
          proc.send_signal(signal.SIGSTOP)
          wait_stopped(proc.pid)
          if progress_lib.tmp_identities(workdir) - stale:
            proc.kill()
            break
          proc.send_signal(signal.SIGCONT)  # That write finished meanwhile: take the next one.
      if reached:
        reached_at = now
    if reached_at is not None and now >= reached_at + point.delay:
      proc.kill()
      break
    time.sleep(0.002)
  rc = proc.wait()
  seconds = time.monotonic() - t0
  if rc not in (0, -signal.SIGKILL):
    raise RuntimeError(f"{kind} job in {workdir} exited with {rc}:\n{_tail(log)}")
  checkpoints, partial = progress_lib.checkpoint_state(workdir)
  steps = progress_lib.logged_steps(progress_lib.metrics_lines(workdir))
  return Landing(
    str(point),
    rc != 0,
    seconds,
    checkpoints,
    partial,
    steps[-1] if steps else None,
    progress.rows() if kind == "harvest" else None,
    progress.resumed_from(),
  )


def kill_and_resume(
  kind: str,
  trial_dir: str | pathlib.Path,
  points: list[KillPoint],
  reference: str | pathlib.Path,
  env: dict | None = None,
  timeout: float = 300,
) -> Trial:
  """Kill the job at each point in turn (each kill's rerun is the next run), then rerun it to
  the end and compare with the finished `reference` job directory. A point the job finished
  before ends the kills."""
  trial_dir = pathlib.Path(trial_dir)
  workdir, log = trial_dir / "job", trial_dir / "log.txt"
  t0 = time.monotonic()
  landings = []
  for point in points:
    landings.append(run_and_kill(kind, workdir, point, log, env, timeout))
    if not landings[-1].killed:
      break  # The job finished: later kill points have nothing left to hit.
  progress = progress_lib.Progress(kind, workdir)
  run_to_end(kind, workdir, log, env, timeout)
  mismatches = results.compare(kind, pathlib.Path(reference), workdir)
  return Trial(kind, landings, mismatches, time.monotonic() - t0, progress.resumed_from())
