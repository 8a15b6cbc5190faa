"""Kill -9 fault injection: run a tiny LM-training, SAE-training or harvesting job in a
subprocess, SIGKILL it at a chosen moment, rerun the same command until it finishes, and compare
the result with an uninterrupted run of the same job, bitwise.

  python -m jaxsae.faults --kind=lm --workdir=/tmp/j    # the child: one tiny job, to the end

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
compilation cache). Used by tests/test_kill_resume.py and experiments/fault_soak.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

KINDS = ("lm", "sae", "harvest")
TRAINERS = ("lm", "sae")
STEPS = {"lm": 16, "sae": 24}  # Train steps of the tiny jobs.
CHECKPOINT_EVERY = {"lm": 4, "sae": 6}
HOOKS = ("blocks.1.resid_post", "blocks.0.mlp.post")
HARVEST = dict(n_windows=64, seq_len=32, batch_size=4, chunk_rows=96)
FINAL = "final.npz"  # The finished job's train state, leaf by leaf (trainers).
TMP_MARK = ".orbax-checkpoint-tmp"
WRITE_FAULT_ENV = "JAXSAE_FAULT_KILL_AT_WRITE"
SAVE_FAULT_ENV = "JAXSAE_FAULT_KILL_AFTER_SAVE"
COMPLETE_FAULT_ENV = "JAXSAE_FAULT_KILL_BEFORE_COMPLETE"
FAULT_ENVS = {"chunk_write": WRITE_FAULT_ENV, "save_issued": SAVE_FAULT_ENV}
FAULT_ENVS["store_complete"] = COMPLETE_FAULT_ENV


# ---- the jobs (run in the child) --------------------------------------------------------------
def lm_config():
  """lm_tiny's model on the asyncio package: 16 steps, a checkpoint every 4, every step logged."""
  from jaxsae.lm.config import base_config
  from jaxsae.text.corpus import stdlib_root

  c = base_config()
  c.model.update(d_model=32, n_layers=2, n_heads=2, d_head=16, d_mlp=64)
  c.data.corpus = str(stdlib_root() / "asyncio")
  c.data.validation_fraction = c.data.test_fraction = 0.15
  c.data.seq_len = 64
  c.train.update(steps=STEPS["lm"], batch_size=16, log_every=1, eval_every=0, eval_sequences=16)
  c.train.checkpoint_every = CHECKPOINT_EVERY["lm"]
  c.optim.warmup_steps = 4
  return c


def sae_config():
  """A TopK + BatchTopK sweep on 16-d synthetic features: 24 steps, a checkpoint every 6. The
  state holds parameters, Adam moments, dead-latent counters and BatchTopK's thresholds."""
  from jaxsae.sae.train_config import base_config

  c = base_config()
  c.sweep.architecture = ("topk", "batchtopk")
  c.sae.update(n_latents=64, k=4)
  c.train.update(steps=STEPS["sae"], batch_size=128, log_every=1, dead_window_tokens=512)
  c.train.checkpoint_every = CHECKPOINT_EVERY["sae"]
  c.optim.update(warmup_steps=2, lr=3e-3)
  c.data.update(normalization_samples=2048, b_dec_samples=512)
  return c


def harvest_windows(tokenizer) -> np.ndarray:
  """(64, 32) token windows of asyncio/base_events.py: fixed, so every run plans the same rows."""
  from jaxsae.text.corpus import stdlib_root

  n, t = HARVEST["n_windows"], HARVEST["seq_len"]
  text = (stdlib_root() / "asyncio" / "base_events.py").read_text()
  return np.asarray(tokenizer.encode(text)[: n * t], np.int32).reshape(n, t)


def _flat_state(state) -> dict[str, np.ndarray]:
  import jax

  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _save_final(workdir: pathlib.Path, state) -> None:
  """Every leaf as raw bytes, with its dtype and shape: reloaded exactly, bfloat16 included."""
  flat = _flat_state(state)
  layout = {k: [str(v.dtype), list(v.shape)] for k, v in flat.items()}
  raw = {k: np.ascontiguousarray(v).reshape(-1).view(np.uint8) for k, v in flat.items()}
  tmp = workdir / (FINAL + ".tmp.npz")
  np.savez(tmp, __layout__=np.asarray(json.dumps(layout)), **raw)
  os.replace(tmp, workdir / FINAL)


def _arm_faults() -> None:
  """Self-kill points from the environment (see the module docstring)."""
  if kill_at_write := int(os.environ.get(WRITE_FAULT_ENV, 0)):
    from jaxsae.activations.store import ActivationStore

    write, calls = ActivationStore.write_rows_async, [0]

    def write_then_die(self, hook, start, values):
      future = write(self, hook, start, values)
      calls[0] += 1
      if calls[0] == kill_at_write:
        os.kill(os.getpid(), signal.SIGKILL)
      return future

    ActivationStore.write_rows_async = write_then_die
  if os.environ.get(COMPLETE_FAULT_ENV):
    from jaxsae.activations.store import ActivationStore

    update = ActivationStore.update_meta

    def die_before_complete(self, **fields):
      if fields.get("complete"):
        os.kill(os.getpid(), signal.SIGKILL)
      update(self, **fields)

    ActivationStore.update_meta = die_before_complete
  if kill_after_save := int(os.environ.get(SAVE_FAULT_ENV, 0)):
    from jaxsae.checkpoint import Checkpointer

    save, saves = Checkpointer.save, [0]

    def save_then_die(self, *args, **kwargs):
      saved = save(self, *args, **kwargs)
      saves[0] += bool(saved)
      if saved and saves[0] == kill_after_save:
        os.kill(os.getpid(), signal.SIGKILL)
      return saved

    Checkpointer.save = save_then_die


def run_job(kind: str, workdir: str | pathlib.Path) -> None:
  """Run (or resume) one tiny job in `workdir` to the end."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _arm_faults()
  if kind == "lm":
    from jaxsae.lm import train

    _save_final(workdir, train.train_and_evaluate(lm_config(), workdir).state)
  elif kind == "sae":
    from jaxsae.sae import data, synthetic
    from jaxsae.sae import train as sae_train

    rows = synthetic.SyntheticFeatures(d=16, n_features=32, active=3, noise=0.05).generate(4096)
    _save_final(workdir, sae_train.train(sae_config(), workdir, data.ArraySource(rows)).state)
  elif kind == "harvest":
    from jaxsae.activations import harvest
    from jaxsae.models import pretrained

    lm = pretrained.load("default")
    windows = harvest_windows(lm.tokenizer)
    settings = {k: HARVEST[k] for k in ("batch_size", "chunk_rows")}
    harvest.harvest(lm, windows, HOOKS, workdir / "store", progress=False, **settings)
  else:
    raise ValueError(f"unknown job kind {kind!r}; one of {KINDS}")


# ---- progress, read from the child's files ----------------------------------------------------
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


# ---- the parent: run, kill, resume, compare --------------------------------------------------
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
  for key in FAULT_ENVS.values():
    env.pop(key, None)
  return env


def _repo() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parent.parent


def _start(kind: str, workdir: pathlib.Path, log: pathlib.Path, env: dict) -> subprocess.Popen:
  command = [sys.executable, "-m", "jaxsae.faults", f"--kind={kind}", f"--workdir={workdir}"]
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


def _wait_stopped(pid: int, timeout: float = 2.0) -> None:
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


def _tmp_identities(workdir: pathlib.Path) -> set[tuple]:
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


class _Progress:
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
  if point.at in FAULT_ENVS:
    env[FAULT_ENVS[point.at]] = str(point.n or 1)
  progress = _Progress(kind, workdir)
  stale = _tmp_identities(workdir)
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
        current = _tmp_identities(workdir) - stale
        writes |= {(name, ino) for name, ino, _ in current}
        if current and len(writes) >= point.n:
          proc.send_signal(signal.SIGSTOP)
          _wait_stopped(proc.pid)
          if _tmp_identities(workdir) - stale:
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
  checkpoints, partial = checkpoint_state(workdir)
  steps = logged_steps(metrics_lines(workdir))
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
  progress = _Progress(kind, workdir)
  run_to_end(kind, workdir, log, env, timeout)
  mismatches = compare(kind, pathlib.Path(reference), workdir)
  return Trial(kind, landings, mismatches, time.monotonic() - t0, progress.resumed_from())


# ---- comparison ------------------------------------------------------------------------------
def load_final(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """{leaf path: array} of a finished trainer job, with its exact dtype."""
  import ml_dtypes

  with np.load(workdir / FINAL, allow_pickle=False) as f:
    layout = json.loads(str(f["__layout__"]))
    out = {}
    for key, (dtype, shape) in layout.items():
      dt = np.dtype(getattr(ml_dtypes, dtype)) if hasattr(ml_dtypes, dtype) else np.dtype(dtype)
      out[key] = f[key].view(dt).reshape(shape)
    return out


def _bitwise_mismatches(label: str, a: np.ndarray, b: np.ndarray) -> list[str]:
  if a.dtype != b.dtype or a.shape != b.shape:
    return [f"{label}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"]
  if a.tobytes() == b.tobytes():
    return []
  diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
  return [f"{label}: {int(np.sum(a != b))} of {a.size} values differ (max |Δ| {diff.max():.3g})"]


def compare(kind: str, reference: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  """What differs between two finished jobs' results (empty: bitwise identical)."""
  if kind in TRAINERS:
    a, b = load_final(reference), load_final(workdir)
    problems = [f"leaf {k} only in one run" for k in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
      problems += _bitwise_mismatches(key, a[key], b[key])
    return problems
  return compare_stores(reference / "store", workdir / "store")


def _store_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
  return {
    str(p.relative_to(root)): p
    for sub in ("acts", "scales", "rows", "windows")
    for p in (root / sub).rglob("*")
    if p.is_file()
  }


def compare_stores(reference: pathlib.Path, store_dir: pathlib.Path) -> list[str]:
  """Every row of every hook, the rows table, the windows and store.json, and the chunk files
  byte for byte."""
  from jaxsae.activations.store import ActivationStore

  a, b = ActivationStore.open(reference), ActivationStore.open(store_dir)
  problems = [
    f"store.json {k}: {a.meta.get(k)!r} vs {b.meta.get(k)!r}"
    for k in sorted(set(a.meta) | set(b.meta))
    if a.meta.get(k) != b.meta.get(k)
  ]
  if any(a.meta[k] != b.meta.get(k) for k in ("hooks", "n_rows", "dtype")):
    return problems  # Not the same arrays: nothing more to compare.
  for hook in a.hooks:  # Raw, in the stored dtype (an int8 store's codes, and its scales).
    rows_a, rows_b = (np.asarray(s.array(hook).read().result()) for s in (a, b))
    problems += _bitwise_mismatches(f"acts/{hook}", rows_a, rows_b)
    if a.quantized:
      scales_a, scales_b = (np.asarray(s.scales_array(hook).read().result()) for s in (a, b))
      problems += _bitwise_mismatches(f"scales/{hook}", scales_a, scales_b)
  problems += _bitwise_mismatches("rows", a.rows_table(), b.rows_table())
  problems += _bitwise_mismatches("windows", a.windows(), b.windows())
  files_a, files_b = _store_files(reference), _store_files(store_dir)
  problems += [f"file {k} only in one store" for k in sorted(set(files_a) ^ set(files_b))]
  problems += [
    f"file {k} differs"
    for k in sorted(set(files_a) & set(files_b))
    if files_a[k].read_bytes() != files_b[k].read_bytes()
  ]
  return problems


def main() -> None:
  # tensorboardX imports torch (2 s) only to recognize its tensors; no job here has any.
  sys.modules.setdefault("torch", None)
  parser = argparse.ArgumentParser(description="Run one tiny fault-injection job to its end.")
  parser.add_argument("--kind", choices=KINDS, required=True)
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args()
  run_job(args.kind, args.workdir)


if __name__ == "__main__":
  main()
