"""What making writes survive a power loss costs: the main job's harvest (chunk files fsynced by
tensorstore's `file_io_sync`, store.json by `saved.write_durable`), one SAE checkpoint save
waited for (the finished step fsynced by `checkpoint._DurableRename`), and an SAE training run
that saves in the background every 100 steps.

  python -m experiments.bench.durability                          # main-job settings, a slice
  python -m experiments.bench.durability --windows=4096 --what=harvest --repeats=5
  python -m experiments.bench.durability --d=768 --n=16384 --what=checkpoint   # a bigger state

Three modes, alternating, `--repeats` times each after one untimed warm-up (compilation, the
first Orbax save); medians are printed. "now" is jaxsae as it is; "before" is without this
change (tensorstore's own fsync of chunk and Orbax array files kept, store.json and the Orbax
step not fsynced); "none" also turns tensorstore's off for the store. The other modes patch
jaxsae for the measurement only."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import flags

from jaxsae import checkpoint, cli, main_job
from jaxsae.activations import harvest as harvest_lib
from jaxsae.activations import store as store_lib

_WINDOWS = flags.DEFINE_integer("windows", 1024, "Windows harvested (main job: 4096).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per mode.")
_D = flags.DEFINE_integer("d", 0, "SAE input width (0: the shipped model's d_model).")
_N = flags.DEFINE_integer("n", 1024, "SAE latents (main job: 1024).")
_STEPS = flags.DEFINE_integer("steps", 300, "SAE training steps (main job: 1500).")
_WHAT = flags.DEFINE_list("what", ["harvest", "checkpoint", "training"], "Which to measure.")
_DIR = flags.DEFINE_string("dir", "", "Where to write (default: a temporary directory).")


@contextlib.contextmanager
def _not_durable(chunks: bool = False):
  """Writes as before this change (`chunks`: tensorstore's own fsync of chunk files, its
  default, kept) or with no fsync at all; Orbax's tensorstore fsync of array files stays."""
  spec, write_json, rename = store_lib._spec, store_lib._write_json, checkpoint._DurableRename

  def spec_no_sync(*args, **kwargs):
    return {**spec(*args, **kwargs), "context": {"file_io_sync": False}}

  def write_json_no_sync(path, doc):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)

  store_lib._write_json = write_json_no_sync
  store_lib._spec = spec if chunks else spec_no_sync
  checkpoint._DurableRename = checkpoint.ocp.path.atomicity.AtomicRenameTemporaryPath
  try:
    yield
  finally:
    store_lib._spec, store_lib._write_json, checkpoint._DurableRename = spec, write_json, rename


MODES = {  # What jaxsae does now; before this change; no fsync anywhere.
  "now": contextlib.nullcontext,
  "before": lambda: _not_durable(chunks=True),
  "none": _not_durable,
}


def _timed(run, root: pathlib.Path) -> dict[str, float]:
  """{mode: median seconds} of `run(directory)`, modes alternating, after a warm-up."""
  with _not_durable():
    run(root / "warmup")
  times = {mode: [] for mode in MODES}
  for i in range(_REPEATS.value):
    for mode, context in MODES.items():
      target = root / f"{mode}_{i}"
      with context():
        t0 = time.perf_counter()
        run(target)
        times[mode].append(time.perf_counter() - t0)
      shutil.rmtree(target, ignore_errors=True)
  return {mode: statistics.median(t) for mode, t in times.items()}


def bench_harvest(root: pathlib.Path) -> dict[str, float]:
  from jaxsae.models import pretrained
  from jaxsae.text import corpus as corpus_lib

  c = main_job.base_config().harvest
  lm = pretrained.load("default")
  files = sorted(corpus_lib.stdlib_root().rglob("*.py"))
  ids, wanted = [], _WINDOWS.value * c.seq_len
  for path in files:
    ids.extend(np.asarray(lm.tokenizer.encode(path.read_text(errors="replace"))).tolist())
    if len(ids) >= wanted:
      break
  windows = np.asarray(ids[:wanted], np.int32).reshape(-1, c.seq_len)

  def run(directory):
    harvest_lib.harvest(
      lm, windows, [c.hook], directory, batch_size=c.batch_size, chunk_rows=c.chunk_rows,
      dtype=c.dtype, progress=False,
    )  # fmt: skip

  return _timed(run, root / "harvest")


def bench_checkpoint(root: pathlib.Path) -> tuple[dict[str, float], int]:
  from jaxsae.sae.train import SAETrainer

  config = main_job.sae_part(main_job.base_config())
  d = _D.value or 128  # The shipped model's d_model.
  config.sae.n_latents = _N.value
  trainer = SAETrainer.build(config, d)
  state = trainer.init_state(jax.random.key(0), np.zeros(d, np.float32))
  size = sum(x.nbytes for x in jax.tree.leaves(state))

  def run(directory):
    with checkpoint.Checkpointer(directory, save_every=1) as c:  # Closing waits for the commit.
      c.save(1, state, metadata={"scale": 1.0})

  return _timed(run, root / "checkpoint"), size


def bench_training(root: pathlib.Path) -> dict[str, float]:
  """A main-job-shaped SAE training run that checkpoints every 100 steps: what the loop feels
  (Orbax writes, and now fsyncs, in the background)."""
  from jaxsae.sae import synthetic
  from jaxsae.sae import train as sae_train

  config = main_job.sae_part(main_job.base_config())
  config.train.update(steps=_STEPS.value, checkpoint_every=100, log_every=100)
  rows = synthetic.SyntheticFeatures(d=_D.value or 128, n_features=512, active=8).generate(65536)

  def run(directory):
    sae_train.train(config, directory, rows)

  return _timed(run, root / "training")


def main(argv):
  del argv
  root = pathlib.Path(_DIR.value or tempfile.mkdtemp(prefix="jaxsae-durability-"))
  rows = []
  if "harvest" in _WHAT.value:
    rows.append((f"harvest, {_WINDOWS.value} windows", bench_harvest(root)))
  if "checkpoint" in _WHAT.value:
    times, size = bench_checkpoint(root)
    rows.append((f"SAE checkpoint save+commit, {size / 2**20:.1f} MiB", times))
  if "training" in _WHAT.value:
    label = f"SAE training, {_STEPS.value} steps, checkpoint every 100"
    rows.append((label, bench_training(root)))
  print(f"{'what (median seconds)':<48} {'now':>7} {'before':>7} {'none':>7} {'vs before':>9}")
  for label, t in rows:
    cost = t["now"] / t["before"] - 1
    print(f"{label:<48} {t['now']:>7.3f} {t['before']:>7.3f} {t['none']:>7.3f} {cost:>+9.1%}")
  if not _DIR.value:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  cli.run(main)
