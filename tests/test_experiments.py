"""The experiment files end to end, as a user runs them: train, export, evaluate and sample."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from jaxsae.models import pretrained
from jaxsae.text.corpus import stdlib_root

pytestmark = pytest.mark.slow  # Subprocesses: the fast tier (-m "not slow") skips them.


def _run(*args, timeout=600):
  result = subprocess.run(
    [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_train_export_and_quickstart(tmp_path):
  workdir, model_dir = tmp_path / "lm", tmp_path / "model"
  _run(
    "experiments.train_lm",
    "--config=experiments/configs/lm_tiny.py",
    f"--workdir={workdir}",
    "--config.train.steps=20",
    "--config.train.eval_every=10",
    "--config.train.checkpoint_every=10",
    f"--config.data.corpus={stdlib_root() / 'asyncio'}",
    "--config.data.validation_fraction=0.15",
    "--config.data.test_fraction=0.15",
  )
  exported = _run("experiments.export_lm", f"--workdir={workdir}", f"--out={model_dir}")
  assert "| bigram |" in exported.stdout
  lm = pretrained.load(model_dir)
  assert lm.metadata["step"] == 20 and lm.config.d_model == 32
  report = lm.metadata["test_report"]
  assert report["split"] == "test" and report["unigram"]["loss"] > report["bigram"]["loss"]

  quick = _run(
    "experiments.quickstart",
    f"--workdir={tmp_path / 'q'}",
    f"--model={model_dir}",
    "--max_sequences=16",
    "--sample_tokens=24",
    "--prompt=x = ",
  )
  assert "sample (temperature 0.8):\nx = " in quick.stdout
  saved = json.loads((tmp_path / "q" / "report.json").read_text())
  assert saved["tokens"] == 16 * 64
  assert "asyncio" in quick.stdout  # The model's own corpus, from its metadata.
  assert (tmp_path / "q" / "report.md").read_text().startswith("| model |")
