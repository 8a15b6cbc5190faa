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


def test_the_attribution_study_writes_its_page_tables_and_figure(tmp_path):
  """Per-layer transcoders and a CLT at one tiny budget, a graph per prompt of one task, the
  weight-sparse circuits beside them and the step beside sparsify's transcoders."""
  out = tmp_path / "study"
  _run(
    "experiments.attribution_study", f"--workdir={out}", f"--publish={tmp_path / 'docs'}",
    "--targets=8", "--steps=10", "--features_per_layer=16", "--pairs=1", "--max_len=32",
    "--tasks=closing_quote", "--bench_repeats=1", "--windows=16,4", "--models=default",
  )  # fmt: skip
  page = (tmp_path / "docs" / "RESULTS.md").read_text()
  assert "## The shipped byte model" in page and "### Attribution graphs of circuit tasks" in page
  assert "figures/frontier.png" in page
  assert (tmp_path / "docs" / "figures" / "frontier.png").stat().st_size > 5000
  frontier = (out / "frontier.csv").read_text().splitlines()
  assert [line.split(",")[:2] for line in frontier[1:]] == [
    ["default", "per-layer"],
    ["default", "cross-layer"],
  ]
  layers = (out / "layers.csv").read_text().splitlines()
  assert len(layers) == 1 + 2 * 4  # Each dictionary's 4 layers.
  graphs = (out / "graphs.csv").read_text().splitlines()
  assert len(graphs) == 3 and all(",closing_quote,2," in line for line in graphs[1:])
  assert "| sparse | closing_quote |" in page  # The weight-sparse circuit of the same task.
  assert len((out / "speed.csv").read_text().splitlines()) == 3
  assert len((out / "memory.csv").read_text().splitlines()) == 2  # The CLT's 7,500-node graph.
  assert (out / "graphs" / "cross-layer_l0_8" / "graphs.json").is_file()  # Reruns reuse them.
  assert (out / "dictionaries" / "results.json").is_file()  # ...and the one sweep.
