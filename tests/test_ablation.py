"""The ablation study: the grid becomes one training config, findings are judged on numbers,
and the whole study runs end to end on a tiny grid."""

import json

import numpy as np
import pytest

from conftest import load_config
from jaxsae.ablation import config as config_lib
from jaxsae.ablation import findings, grid, report, study
from jaxsae.errors import ConfigError
from jaxsae.evals import probe_tasks
from jaxsae.sae import train_config


def tiny_config():
  c = config_lib.base_config()
  c.harvest.seq_len = 64
  c.harvest.train_windows = 96
  c.harvest.eval_windows = 24
  c.harvest.chunk_rows = 1024
  c.grid.runs = (
    ("topk", 64, (4, 8, 16)),
    ("topk_multi", 64, (4, 8)),
    ("relu", 64, (0.03, 0.01, 0.003)),
    ("topk", 32, (4, 8)),
    ("topk", 128, (4, 8)),
    ("topk_plain", 128, (8,)),
  )
  c.grid.reference_width = 64
  c.train.steps = 24
  c.train.batch_size = 256
  c.train.log_every = 4
  c.train.checkpoint_every = 100
  c.train.dead_window_tokens = 2048
  c.optim.warmup_steps = 2
  c.data.normalization_samples = 1024
  c.data.b_dec_samples = 256
  c.evals.probe_windows = 24
  c.evals.n2g_latents = 24
  c.evals.browser_latents = 3
  c.evals.browser_families = ("topk",)
  c.evals.ablation_latents = 3
  c.evals.ablation_windows = 2
  c.evals.refine_rows = 256
  c.evals.refine_steps = 10
  return c


def test_the_grid_is_one_training_config_of_variant_groups():
  training = config_lib.validate(tiny_config())
  groups = {g.name: g for g in train_config.plan(training, 128)}
  assert list(groups) == [
    "topk_n64",
    "topk_multi_n64",
    "relu_n64",
    "topk_n32",
    "topk_n128",
    "topk_plain_n128",
  ]
  assert [m.k for m in groups["topk_n64"].members] == [4, 8, 16]
  assert groups["topk_multi_n64"].config.multi_topk
  relu = groups["relu_n64"]
  assert [m.sparsity_coefficient for m in relu.members] == [0.03, 0.01, 0.003]
  plain = groups["topk_plain_n128"].config
  assert (plain.tied_init, plain.k_aux, plain.n_latents) == (False, 0, 128)


@pytest.mark.parametrize("size", ["default", "quick"])
def test_the_shipped_study_configs_are_valid(size):
  config = load_config("ablation", size)
  groups = train_config.plan(config_lib.validate(config), 128)
  families = {g.name.rsplit("_n", 1)[0] for g in groups}
  assert families == set(grid.FAMILIES)  # Every architecture and variant of the study.


def test_bad_grids_are_named():
  c = tiny_config()
  c.grid.runs = (("topk", 64, (4,)), ("topk", 64, (8,)), ("softmax", 64, (1,)), ("relu", 0, ()))
  c.grid.reference_family = "gated"
  c.grid.reference_width = 100
  with pytest.raises(ConfigError) as info:
    config_lib.validate(c)
  text = str(info.value)
  assert "lists topk at width 64 twice" in text and "'softmax' is not one of" in text
  assert "width 0" in text and "non-empty tuple" in text and "reference_family='gated'" in text
  assert "reference_width=100 has no run" in text


def row(family, width, l0, fvu, k=None, **extra):
  return {"family": family, "width": width, "l0": l0, "fvu": fvu, "k": k, **extra}


def test_topk_against_relu_is_judged_at_matched_l0():
  rows = [row("topk", 64, 8, 0.20, 8), row("topk", 64, 16, 0.12, 16)]
  relu = [row("relu", 64, 4, 0.50), row("relu", 64, 32, 0.10)]
  verdict = findings.topk_beats_relu(rows + relu, 64)
  # ReLU at L0 8 interpolates in log-log to 0.5·(0.2)^(1/3) ≈ 0.292 > 0.20; at 16, ≈ 0.171 > 0.12.
  assert verdict.verdict == "holds" and "0.292" in verdict.evidence
  worse = [row("topk", 64, 16, 0.2, 16)]
  assert findings.topk_beats_relu(worse + relu, 64).verdict == "does not hold"
  near = [row("topk", 64, 34, 0.05, 34)]  # 6% past ReLU's range: the end segment extends.
  extended = findings.topk_beats_relu(near + relu, 64)
  assert extended.verdict == "holds" and f"{0.5 * 0.2 ** (np.log(34 / 4) / np.log(8)):.3f}" in (
    extended.evidence
  )
  far = [row("topk", 64, 64, 0.05, 64)]
  assert findings.topk_beats_relu(far + relu, 64).verdict == "not measured"


def test_multi_topk_finding_needs_flat_multi_and_rising_plain():
  def curve(mses):
    return [
      {"activation": "topk", "value": k, "mse": m, "l0": k, "fvu": m}
      for k, m in zip((8, 16, 32), mses, strict=True)
    ]

  ok = findings.multi_topk_recovers(
    {"topk": curve([1, 2, 4]), "topk_multi": curve([1, 0.9, 0.8])}, 8
  )
  assert ok.verdict == "holds"
  bad = findings.multi_topk_recovers(
    {"topk": curve([1, 2, 4]), "topk_multi": curve([1, 1.2, 1])}, 8
  )
  assert bad.verdict == "does not hold" and "+20.0%" in bad.evidence


def test_auxk_finding_compares_dead_fractions_at_the_widest_width():
  rows = [
    row("topk", 128, 8, 0.2, 8, dead_fraction=0.01, dead_held_out=0.05),
    row("topk_plain", 128, 8, 0.25, 8, dead_fraction=0.40, dead_held_out=0.45),
  ]
  assert findings.auxk_prevents_dead(rows).verdict == "holds"
  rows[1]["dead_fraction"] = 0.0
  assert findings.auxk_prevents_dead(rows).verdict == "does not hold"
  for r in rows:
    r["dead_fraction"] = r["dead_held_out"] = 0.0
  assert findings.auxk_prevents_dead(rows).verdict == "inconclusive"


@pytest.mark.slow
def test_the_study_runs_end_to_end_on_a_tiny_grid(tmp_path):
  config = tiny_config()
  # Every family, finding and figure, with the fewest runs (each compiles its own splice):
  # two sparsities of TopK and ReLU at the reference width, three widths at k = 8.
  config.grid.runs = (
    ("topk", 64, (4, 8)),
    ("topk_multi", 64, (8,)),
    ("relu", 64, (0.03, 0.003)),
    ("topk", 32, (8,)),
    ("topk", 128, (8,)),
    ("topk_plain", 128, (8,)),
  )
  result = study.run(config, tmp_path)
  assert len(result.rows) == 2 + 1 + 2 + 1 + 1 + 1
  for r in result.rows:
    assert 0 < r["fvu"] < 1.5 and r["l0"] > 0 and np.isfinite(r["delta_ce"])
    assert -1 <= r["kl_score"] <= 1 and np.isfinite(r["ce_recovered_mean"])
  topk_k8 = next(r for r in result.rows if r["label"] == "topk_n64[k=8]")
  assert topk_k8["l0"] == pytest.approx(8, abs=0.01)  # Exactly k on every token.
  assert set(result.interp) >= {"topk", "topk_multi", "relu"}
  for family in ("topk", "relu"):
    d = result.interp[family]
    assert np.isfinite(d["probe_loss"]) and len(d["probe_tasks"]) == len(probe_tasks.TASKS)
    assert 0 <= d["n2g_precision"] <= 1
    assert (
      d["ablation_effective"] >= 1
      and d["refine_fixed_fvu_after"] <= d["refine_fixed_fvu_before"] + 1e-6
    )
  assert {f.claim for f in result.findings} >= {"TopK's FVU is below ReLU's at matched L0"}
  for name in ("RESULTS.md", "results.csv", "interpretability.csv", "probes.csv", "recovery.csv"):
    assert (tmp_path / name).exists(), name
  assert len(result.figures) == 7 and all(p.stat().st_size > 5000 for p in result.figures)
  page = (tmp_path / "RESULTS.md").read_text()
  assert "## The TopK paper's findings on our model" in page and "figures/scaling.png" in page
  assert (tmp_path / "browser" / "topk" / "index.html").exists()
  assert len(json.loads((tmp_path / "findings.json").read_text())) == len(result.findings)
  report.publish(tmp_path, tmp_path / "published")
  assert (tmp_path / "published" / "figures" / "scaling.png").exists()
  assert (tmp_path / "published" / "RESULTS.md").read_text() == page


def test_power_law_finding_quotes_the_points_and_judges_the_fit():
  from jaxsae.evals import scaling

  n = np.array([256, 512, 1024, 2048, 4096])
  clean = 3.0 * n**-0.4 + 0.05
  verdict = findings.power_law_in_n(scaling.fit_power_law(n, clean), 16, zip(n, clean, strict=True))
  assert verdict.verdict == "holds" and "n=256: 0.3" in verdict.evidence
  bent = np.array([0.30, 0.25, 0.22, 0.30, 0.40])  # Wider dictionaries undertrained.
  verdict = findings.power_law_in_n(scaling.fit_power_law(n, bent), 16, zip(n, bent, strict=True))
  assert verdict.verdict == "does not hold"
  assert findings.power_law_in_n(None, 16).verdict == "not measured"
