"""The child of the kill -9 tests: one tiny LM-training, SAE-training or harvesting job, run
(or resumed) to its end in a workdir. A finished trainer job leaves its train state leaf by leaf
in `results.FINAL`; a harvest leaves its store in <workdir>/store.

  python -m jaxsae.testing.jobs --kind=lm --workdir=/tmp/j    # one tiny job, to the end

Self-kill points, armed from the environment (`jaxsae.testing.faults` sets them):
  WRITE_FAULT_ENV=n     SIGKILL right after issuing the n-th chunk write (one hook's rows of one
                        chunk), before the write completes ("chunk_write");
  SAVE_FAULT_ENV=n      SIGKILL right after `Checkpointer.save` returns for the n-th checkpoint,
                        its asynchronous write in flight ("save_issued");
  COMPLETE_FAULT_ENV=1  SIGKILL just before the store is marked complete ("store_complete").
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys

import numpy as np

from jaxsae.testing import results

KINDS = ("lm", "sae", "harvest")
STEPS = {"lm": 16, "sae": 24}  # Train steps of the tiny jobs.
CHECKPOINT_EVERY = {"lm": 4, "sae": 6}
HOOKS = ("blocks.1.resid_post", "blocks.0.mlp.post")
HARVEST = dict(n_windows=64, seq_len=32, batch_size=4, chunk_rows=96)
WRITE_FAULT_ENV = "JAXSAE_FAULT_KILL_AT_WRITE"
SAVE_FAULT_ENV = "JAXSAE_FAULT_KILL_AFTER_SAVE"
COMPLETE_FAULT_ENV = "JAXSAE_FAULT_KILL_BEFORE_COMPLETE"
FAULT_ENVS = {"chunk_write": WRITE_FAULT_ENV, "save_issued": SAVE_FAULT_ENV}
FAULT_ENVS["store_complete"] = COMPLETE_FAULT_ENV


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

    results.save_final(workdir, train.train_and_evaluate(lm_config(), workdir).state)
  elif kind == "sae":
    from jaxsae.sae import row_sources, synthetic
    from jaxsae.sae import train as sae_train

    rows = synthetic.SyntheticFeatures(d=16, n_features=32, active=3, noise=0.05).generate(4096)
    results.save_final(
      workdir, sae_train.train(sae_config(), workdir, row_sources.ArraySource(rows)).state
    )
  elif kind == "harvest":
    from jaxsae.activations import harvest
    from jaxsae.models import pretrained

    lm = pretrained.load("default")
    windows = harvest_windows(lm.tokenizer)
    settings = {k: HARVEST[k] for k in ("batch_size", "chunk_rows")}
    harvest.harvest(lm, windows, HOOKS, workdir / "store", progress=False, **settings)
  else:
    raise ValueError(f"unknown job kind {kind!r}; one of {KINDS}")


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
