"""Kill -9 soak: many random kills of tiny LM-training, SAE-training and harvesting jobs, each
resumed to the end and compared bitwise with an uninterrupted run (jaxsae/testing/faults.py).

  python -m experiments.fault_soak --trials=15 --kinds=lm,sae,harvest --workdir=runs/fault_soak

Each trial kills its job 1 to `--max_kills` times before letting it finish. A kill is drawn at
random from: a random time since the start (import and compile included), a random number of
train steps or stored rows into the run, during a random checkpoint write (SIGSTOP, verify the
temporary directory, SIGKILL), right after a random save is issued, right after a random chunk
write is issued, or just before the store is marked complete. Each kind's reference is run
twice first (the second run, warm, times the "time" kills and checks that uninterrupted runs
agree). Prints a markdown table (where each kill landed, where each run resumed: "—" when a
run logged no step, bitwise equal or not) and writes summary.json and summary.md to the
workdir. Exits with status 1 if anything differs.
"""

import dataclasses
import json
import pathlib
import shutil
import sys
import time

import numpy as np
from absl import app, flags

from jaxsae import tables
from jaxsae.testing import faults, jobs, progress, results
from jaxsae.testing.faults import KillPoint

_TRIALS = flags.DEFINE_integer("trials", 15, "Trials in all, spread over the kinds in turn.")
_KINDS = flags.DEFINE_list("kinds", ["lm", "sae", "harvest"], "Job kinds: lm, sae, harvest.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/fault_soak", "Where jobs and the summary go.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill points.")
_MAX_KILLS = flags.DEFINE_integer("max_kills", 2, "Most kills per trial before it may finish.")
_DEVICES = flags.DEFINE_integer("devices", 2, "Forced CPU devices per job.")


def random_point(kind: str, rng: np.random.Generator, seconds: float, n_rows: int) -> KillPoint:
  """One kill point; `seconds` is the uninterrupted run's wall time, `n_rows` the store's."""
  if kind == "harvest":
    chunk = jobs.HARVEST["chunk_rows"]
    choice = rng.choice(["time", "rows", "chunk_write", "store_complete"], p=[0.4, 0.3, 0.2, 0.1])
    if choice == "rows":
      return KillPoint("rows", int(rng.integers(1, n_rows)), float(rng.uniform(0, 0.05)))
    if choice == "chunk_write":
      return KillPoint("chunk_write", int(rng.integers(1, 2 * -(-n_rows // chunk) + 1)))
    if choice == "store_complete":
      return KillPoint("store_complete")
    return KillPoint("time", delay=float(rng.uniform(0.05, 1.0) * seconds))
  steps, writes = jobs.STEPS[kind], jobs.STEPS[kind] // jobs.CHECKPOINT_EVERY[kind]
  choice = rng.choice(["time", "step", "checkpoint_write", "save_issued"], p=[0.3, 0.3, 0.25, 0.15])
  if choice == "step":
    return KillPoint("step", int(rng.integers(1, steps)), float(rng.uniform(0, 0.2)))
  if choice in ("checkpoint_write", "save_issued"):
    return KillPoint(str(choice), int(rng.integers(1, writes + 1)))
  return KillPoint("time", delay=float(rng.uniform(0.05, 1.0) * seconds))


def main(argv):
  del argv
  kinds = [k for k in _KINDS.value if k]
  unknown = set(kinds) - set(jobs.KINDS)
  if unknown:
    raise app.UsageError(f"unknown kinds {sorted(unknown)}; choose from {jobs.KINDS}")
  root = pathlib.Path(_WORKDIR.value).absolute()
  shutil.rmtree(root, ignore_errors=True)
  env = faults.child_env(devices=_DEVICES.value, cache_dir=root / "jax_cache")
  rng = np.random.default_rng(_SEED.value)
  t0 = time.monotonic()
  references, seconds, repeatable = {}, {}, {}
  for kind in kinds:
    # The first run fills the compilation cache before any kill (see child_env); the second,
    # warm, one times a run for the "time" kills and shows that two uninterrupted runs agree.
    references[kind], again = root / "reference" / kind, root / "reference_again" / kind
    faults.run_to_end(kind, references[kind], references[kind].parent / f"{kind}.log", env)
    seconds[kind] = faults.run_to_end(kind, again, again.parent / f"{kind}.log", env)
    repeatable[kind] = results.compare(kind, references[kind], again) == []
    print(f"reference {kind}: {seconds[kind]:.1f}s warm, repeatable: {repeatable[kind]}")
  n_rows = progress.store_meta(references["harvest"]).get("n_rows", 0) if "harvest" in kinds else 0
  trials, rows = [], []
  for i in range(_TRIALS.value):
    kind = kinds[i % len(kinds)]
    points = [
      random_point(kind, rng, seconds[kind], n_rows)
      for _ in range(rng.integers(1, _MAX_KILLS.value + 1))
    ]
    trial = faults.kill_and_resume(
      kind, root / f"trial_{i:03d}_{kind}", points, references[kind], env
    )
    trials.append(trial)
    starts = [landing.resumed_from for landing in trial.landings] + [trial.final_resume]
    row = {
      "trial": i,
      "kind": kind,
      "kills": "; ".join(landing.describe() for landing in trial.landings),
      "mid-write": sum(bool(landing.partial) for landing in trial.landings),
      "resumed from": " → ".join("—" if s is None else str(s) for s in starts),
      "bitwise equal": "yes" if trial.equal else "NO",
      "seconds": f"{trial.seconds:.1f}",
    }
    rows.append(row)
    print(tables.markdown([row]).splitlines()[-1], flush=True)
    if not trial.equal:
      print("\n".join(trial.mismatches[:20]), flush=True)
  kills = [landing for trial in trials for landing in trial.landings]
  summary = {
    "trials": len(trials),
    "kills": sum(landing.killed for landing in kills),
    "kills_mid_checkpoint_write": sum(bool(landing.partial) for landing in kills),
    "runs_finished_before_the_kill": sum(not landing.killed for landing in kills),
    "all_bitwise_equal": all(trial.equal for trial in trials),
    "uninterrupted_runs_repeatable": repeatable,
    "seconds": round(time.monotonic() - t0, 1),
    "reference_seconds": {k: round(v, 1) for k, v in seconds.items()},
    "seed": _SEED.value,
    "results": [dataclasses.asdict(trial) | {"equal": trial.equal} for trial in trials],
  }
  table = tables.markdown(rows)
  head = {k: v for k, v in summary.items() if k != "results"}
  text = f"# Kill -9 soak\n\n```\n{json.dumps(head, indent=2)}\n```\n\n{table}\n"
  (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  (root / "summary.md").write_text(text)
  print(f"\n{table}\n\n{json.dumps(head, indent=2)}\nwrote {root / 'summary.md'}")
  if not (summary["all_bitwise_equal"] and all(repeatable.values())):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
