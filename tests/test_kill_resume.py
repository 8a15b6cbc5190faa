"""Kill -9 during LM training, SAE training and harvesting (subprocesses, jaxsae/testing/), then
resume: the final train state is bitwise equal to an uninterrupted run's, and the store's rows,
rows table, windows, store.json and chunk files are identical.

Kill points follow observed progress (a checkpoint's temporary directory, logged steps, issued
writes), not wall time, so each kill lands mid-run on a loaded machine too; the step counts are
drawn from fixed seeds. The soak version is experiments/fault_soak.py.
"""

import pathlib
import shutil

import numpy as np
import pytest

from jaxsae import run_log
from jaxsae.testing import faults, jobs, results
from jaxsae.testing.faults import KillPoint

pytestmark = pytest.mark.slow  # Subprocesses: the fast tier (-m "not slow") skips them.


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Two CPU devices per child, and one compilation cache: only the first run of a kind compiles."""
  return faults.child_env(devices=2, cache_dir=tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """The uninterrupted run of a job kind (run once per module, on first use)."""
  root, done = tmp_path_factory.mktemp("reference"), {}

  def get(kind: str) -> pathlib.Path:
    if kind not in done:
      faults.run_to_end(kind, root / kind / "job", root / kind / "log.txt", env)
      done[kind] = root / kind / "job"
    return done[kind]

  return get


def _report(trial) -> str:
  lines = [landing.describe() for landing in trial.landings]
  return "\n".join([*lines, f"final run from {trial.final_resume}", *trial.mismatches[:20]])


def _assert_resumed_at_newest_checkpoint(trial):
  """Each rerun started at the newest checkpoint committed when the run before it died."""
  starts = [landing.resumed_from for landing in trial.landings[1:]] + [trial.final_resume]
  for landing, start in zip(trial.landings, starts, strict=True):
    assert start == max(landing.checkpoints, default=0), _report(trial)


def test_lm_training_killed_mid_checkpoint_write_and_mid_run_resumes_bitwise(
  reference, env, tmp_path
):
  """LM: killed while checkpoint 8 is being written (a verified leftover temporary directory),
  resumed, killed again a seeded number of steps in, resumed to the end."""
  steps_in = int(np.random.default_rng(0).integers(1, 8))
  points = [KillPoint("checkpoint_write", 2), KillPoint("step", steps_in, delay=0.01)]
  trial = faults.kill_and_resume("lm", tmp_path, points, reference("lm"), env)
  assert all(landing.killed for landing in trial.landings), _report(trial)
  assert trial.landings[0].partial, _report(trial)  # The kill landed during a write.
  _assert_resumed_at_newest_checkpoint(trial)
  assert trial.equal, _report(trial)
  (metrics,) = tmp_path.rglob("metrics.jsonl")  # Steps redone after a kill are logged once.
  steps = [r["step"] for r in run_log.read_jsonl(metrics, "train")]
  assert steps == sorted(set(steps)) and steps, steps


def test_sae_training_killed_mid_checkpoint_write_resumes_bitwise(reference, env, tmp_path):
  """SAE sweep (TopK + BatchTopK: parameters, Adam moments, dead counters, thresholds, and the
  input scale from the checkpoint's metadata): killed while checkpoint 12 is being written."""
  trial = faults.kill_and_resume(
    "sae", tmp_path, [KillPoint("checkpoint_write", 2)], reference("sae"), env
  )
  assert trial.landings[0].killed and trial.landings[0].partial, _report(trial)
  _assert_resumed_at_newest_checkpoint(trial)
  assert trial.equal, _report(trial)


def test_harvest_killed_with_chunk_writes_in_flight_resumes_identically(reference, env, tmp_path):
  """Harvest (two hooks, batches of 4 windows, chunks of 96 rows ≈ 3 windows): killed right
  after the 5th write is issued (chunk 2's first hook; chunk 1 still in flight). Only chunk 0
  is recorded, so the rerun resumes at row 96, in window 3: inside a batch. (Batching from
  there left window 63 alone in a last batch, which rounds differently from a batch of 4.)"""
  trial = faults.kill_and_resume(
    "harvest", tmp_path, [KillPoint("chunk_write", 5)], reference("harvest"), env
  )
  landing = trial.landings[0]
  assert landing.killed and landing.rows_written == jobs.HARVEST["chunk_rows"]
  assert trial.final_resume == landing.rows_written
  assert trial.equal, _report(trial)


def test_harvest_killed_at_seeded_rows_then_before_it_marks_the_store_complete(
  reference, env, tmp_path
):
  """Killed once a seeded number of rows is recorded, then (rerun) with every row recorded but
  `complete` and the input scales not yet written: the last rerun only finishes the store."""
  rows = int(np.random.default_rng(1).integers(96, 1200))
  points = [KillPoint("rows", rows), KillPoint("store_complete")]
  trial = faults.kill_and_resume("harvest", tmp_path, points, reference("harvest"), env)
  first, second = trial.landings
  assert first.killed and second.killed, _report(trial)
  assert second.resumed_from == first.rows_written and first.rows_written >= rows
  assert second.rows_written == trial.final_resume == 2048
  assert trial.equal, _report(trial)


def test_the_comparison_sees_one_flipped_bit(reference, tmp_path):
  """Not vacuous: one bit of one leaf, or one byte of one chunk file, is a mismatch."""
  state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int32(3)}
  for name in ("a", "b"):
    (tmp_path / name).mkdir()
    results.save_final(tmp_path / name, state)
  assert results.compare("lm", tmp_path / "a", tmp_path / "b") == []
  state["w"].view(np.uint32)[1, 2] ^= 1
  results.save_final(tmp_path / "b", state)
  assert results.compare("lm", tmp_path / "a", tmp_path / "b") == [
    "['w']: 1 of 6 values differ (max |Δ| 4.77e-07)"
  ]
  store = reference("harvest") / "store"
  shutil.copytree(store, tmp_path / "copy" / "store")
  chunk = next((tmp_path / "copy" / "store" / "acts").rglob("c/1/0"))
  data = bytearray(chunk.read_bytes())
  data[-1] ^= 1
  chunk.write_bytes(bytes(data))
  problems = results.compare("harvest", store.parent, tmp_path / "copy")
  assert f"file {chunk.relative_to(tmp_path / 'copy' / 'store')} differs" in problems, problems
  assert any(p.startswith("acts/") for p in problems), problems
