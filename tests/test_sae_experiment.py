"""The SAE experiment end to end: every architecture in one pass, evaluated, exported, tabled."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, load_config
from jaxsae.run_log import read_jsonl
from jaxsae.sae import evaluate, experiment_data, export
from jaxsae.sae.train_config import RECIPES


def tiny(config):
  config.sae.n_latents = 64
  config.data.synthetic.update(d=16, n_features=32, tokens=4096)
  config.data.normalization_samples = 1024
  config.data.b_dec_samples = 256
  config.train.update(steps=20, batch_size=128, log_every=10, checkpoint_every=20)
  config.optim.warmup_steps = 2
  return config


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_architecture_config_loads_and_validates(name):
  from jaxsae import main_job

  config = load_config(f"sae_{name}")
  assert config.sae.architecture == name
  for key, value in RECIPES[name].items():
    assert config.sae[key] == value
  main_job.validate(config)


@pytest.mark.slow
def test_synthetic_benchmark_trains_evaluates_and_exports_every_architecture(tmp_path):
  from jaxsae.sae import experiment

  config = tiny(load_config("sae_synthetic"))
  rows = experiment.run(config, tmp_path)
  assert [r["sae"] for r in rows] == list(RECIPES)
  assert (tmp_path / "results.md").read_text().count("\n") == len(RECIPES) + 2
  assert (tmp_path / "results.csv").exists()
  assert list((tmp_path / "tensorboard").iterdir())
  histograms = read_jsonl(tmp_path / "metrics.jsonl", histograms=True)
  assert {h["histogram"] for h in histograms} == {f"{a}/density_histogram" for a in RECIPES}
  assert all(sum(h["counts"]) == 64 for h in histograms)
  _, held_out = experiment_data.open_source(config.data)
  for row in rows:
    assert 0 <= row["recovered@0.9"] <= 1 and np.isfinite(row["fvu"])
    sae_config, variables, meta = export.load(tmp_path / "saes" / row["sae"])
    again = evaluate.reconstruction_metrics(sae_config, variables, 1.0, held_out)
    assert again["l0"] == pytest.approx(row["l0"], rel=1e-4, abs=1e-4)
    assert again["fvu"] == pytest.approx(row["fvu"], rel=1e-3)
    assert meta["steps"] == 20


@pytest.mark.slow
def test_cli_prints_the_table_and_refuses_bad_overrides(tmp_path):
  base = [
    sys.executable,
    "-m",
    "experiments.train_sae",
    "--config=experiments/configs/sae_synthetic.py",
  ]
  small = [
    "--config.sweep.architecture=('topk',)",
    "--config.sae.n_latents=32",
    "--config.data.synthetic.d=8",
    "--config.data.synthetic.tokens=2048",
    "--config.train.steps=4",
    "--config.train.batch_size=64",
    "--config.data.normalization_samples=256",
    "--config.data.b_dec_samples=64",
  ]
  ok = subprocess.run(
    base + small + [f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True
  )
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "| sae | l0 | fvu |" in ok.stdout
  bad = subprocess.run(
    base + small + ["--config.sae.k=100", f"--workdir={tmp_path / 'bad'}"],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2
  assert "k=100 must be in [1, n_latents=32]" in bad.stderr
  assert "Traceback" not in bad.stderr
