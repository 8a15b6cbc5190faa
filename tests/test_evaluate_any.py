"""Evaluating any dictionary: the shipped SAE in three formats agrees, the files and the table
hold the metrics, and an SAE of the wrong width is refused before any harvest."""

import json
import subprocess
import sys

import numpy as np
import pytest
from test_hf_gpt2 import corpus_dir  # noqa: F401  (fixture)

from conftest import REPO, load_config
from jaxsae.evals import evaluate_any
from jaxsae.sae import export, saelens, sparsify_format

HOOK = "blocks.1.resid_post"


def tiny_config(sae, *, full=False):
  c = load_config("evaluate")
  c.sae, c.tokens = str(sae), 256
  c.harvest.update(seq_len=32, batch_size=8)
  c.evals.update(baselines=full, baseline_windows=4, baseline_rows=128)
  c.evals.update(probes="on" if full else "off", probe_windows=4)
  c.evals.update(n2g_latents=32 if full else 0, browser_latents=2)
  return c


@pytest.mark.slow
def test_three_formats_of_the_shipped_sae_give_the_same_metrics(tmp_path):
  config, variables, _ = export.load("default")
  saelens.save(tmp_path / "saelens", config, variables, 1.0, {"hook_name": HOOK})
  sparsify_format.save(tmp_path / "layers.1", config, variables, 1.0)
  rows = [
    evaluate_any.run(tiny_config(sae), tmp_path / name)[0]
    for name, sae in (
      ("own", "default"),
      ("lens", tmp_path / "saelens"),
      ("sp", tmp_path / "layers.1"),
    )
  ]
  assert [r["source_format"] for r in rows] == ["jaxsae", "saelens", "sparsify"]
  assert all(r["hook"] == HOOK for r in rows)  # Each read from the SAE's own files.
  own = rows[0]
  assert own["l0"] == pytest.approx(16.0) and 0 < own["fvu"] < 0.5
  for other in rows[1:]:
    for key in ("l0", "fvu", "dead_fraction", "dense_fraction", "delta_ce", "kl"):
      assert other[key] == pytest.approx(own[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_the_table_and_files_hold_every_metric_beside_the_baselines(tmp_path):
  rows = evaluate_any.run(tiny_config("default", full=True), tmp_path)
  assert [r["method"] for r in rows] == ["SAE (topk)", "PCA top-16", "random TopK-16"]
  own = rows[0]
  assert own["fvu"] < rows[2]["fvu"] and own["ce_zero"] > own["ce_clean"]
  for key in ("probe_loss", "n2g_f1", "dense_fraction", "ce_recovered", "kl"):
    assert np.isfinite(own[key]), key
  for name in ("results.csv", "density.csv", "probes.csv", "browser/index.html"):
    assert (tmp_path / name).exists(), name
  table = (tmp_path / "results.md").read_text()
  assert all(c in table for c in evaluate_any.COLUMNS) and "SAE (topk)" in table
  records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert len(records) == 3 and records[0]["fvu"] == pytest.approx(own["fvu"])
  density = (tmp_path / "density.csv").read_text().splitlines()
  assert sum(int(line.rsplit(",", 1)[1]) for line in density[1:]) == 1024  # Every latent.


@pytest.mark.slow
def test_the_command_refuses_an_sae_of_another_width_naming_both_widths_and_the_fix(tmp_path):
  result = subprocess.run(
    [sys.executable, "-m", "experiments.evaluate", "--sae=default", "--model=default",
     "--hook=blocks.1.mlp.post", f"--workdir={tmp_path / 'w'}"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 2 and "Traceback" not in result.stderr
  message = "d_in=128, but hook blocks.1.mlp.post of model default is 512 wide"
  assert message in result.stderr and "--hook=blocks.1.resid_post" in result.stderr
  assert not (tmp_path / "w").exists()  # Refused before any harvest.


def test_the_recorded_hook_is_read_under_each_key_in_jaxsae_naming():
  assert evaluate_any.recorded_hook({"hook": HOOK}) == HOOK
  assert evaluate_any.recorded_hook({"hook_name": "blocks.1.hook_resid_post"}) == HOOK
  assert evaluate_any.recorded_hook({"metadata": {"hook_name": "blocks.2.hook_mlp_out"}}) == (
    "blocks.2.mlp.out"
  )
  assert evaluate_any.recorded_hook({"hook": None, "hook_name": HOOK}) == HOOK
  assert evaluate_any.recorded_hook({}) is None


@pytest.mark.slow
def test_bos_and_skip_first_follow_the_models_tokenizer_unless_set(
  tmp_path,
  monkeypatch,
  corpus_dir,  # noqa: F811
):
  import types

  from test_families import save_family

  from jaxsae.errors import ConfigError
  from jaxsae.evals import baselines

  save_family("gemma3", tmp_path / "gemma")  # Its tokenizer's <bos> is id 1.
  config, variables = baselines.random_topk(32, 64, 4, np.zeros(32, np.float32), 0)
  export.save(tmp_path / "sae", config, variables, 1.0, {"hook": HOOK})
  seen = []
  original = evaluate_any.downstream.reference_losses

  def spy(lm, windows, hook, skip_first, batch_size):
    seen.append((np.asarray(windows)[:, 0], skip_first))
    return original(lm, windows, hook, skip_first, batch_size)

  monkeypatch.setattr(evaluate_any.downstream, "reference_losses", spy)
  c = tiny_config(tmp_path / "sae")
  c.harvest.update(model=str(tmp_path / "gemma"), corpus=str(corpus_dir), seq_len=16)
  c.tokens = 64
  row = evaluate_any.run(c, tmp_path / "w")[0]
  assert (row["bos"], row["skip_first"]) == (True, 1) and np.isfinite(row["fvu"])
  firsts, skip_first = seen[0]
  assert skip_first == 1 and (firsts == 1).all()  # Every spliced window begins with BOS.

  def resolved(model_type, **set_fields):
    h = evaluate_any.base_config().harvest
    h.update(set_fields)
    evaluate_any.resolve_bos(h, types.SimpleNamespace(metadata={"model_type": model_type}))
    return h.bos, h.skip_first

  assert resolved("llama") == (True, 1) and resolved("gemma3_text") == (True, 1)
  assert resolved("gpt2") == (False, 0) and resolved(None) == (False, 0)
  assert resolved("gemma2", bos=False) == (False, 0)  # What the user set stays.
  assert resolved("llama", skip_first=3) == (True, 3) and resolved("qwen2", bos=True) == (True, 1)
  with pytest.raises(ConfigError, match="seq_len=2 must be ≥ 3 with bos"):
    resolved("llama", seq_len=2)
