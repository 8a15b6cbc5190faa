"""The Gemma 3 study's whole path at toy size: a tiny random Gemma 3 saved by transformers, every
stage (test-split loss, BOS-first harvest, the forward beside transformers, three SAE
architectures in one pass, spliced evaluation with baselines, SmoothQuant), and the report."""

import math

import numpy as np
import pytest
from test_families import save_family
from test_hf_gpt2 import corpus_dir  # noqa: F401  (fixture)

from conftest import load_config
from jaxsae import gemma3_report, gemma3_study
from jaxsae.errors import ConfigError
from jaxsae.text import pipeline


def tiny_config(folder, corpus):
  c = load_config("gemma3")
  c.harvest.update(model=str(folder), corpus=str(corpus), seq_len=16, train_windows=64,
                   eval_windows=8, batch_size=8, chunk_rows=256)  # fmt: skip
  c.sae.update(n_latents=64, k=4, topk_path="auto")
  c.train.update(steps=8, batch_size=64, log_every=4, checkpoint_every=8, dead_window_tokens=256)
  c.data.update(normalization_samples=256, b_dec_samples=128)
  c.optim.warmup_steps = 2
  c.lm_eval.max_windows = 8
  c.speed.update(windows=8, batch_size=4, repeats=1)
  c.evals.delta_ce_windows = 4
  c.smoothquant.update(models=str(folder), corpus=str(corpus), seq_len=16,
                       calibration_windows=4, eval_windows=4, alphas=(0.5,),
                       activation_modes=("per_token",))  # fmt: skip
  return c


@pytest.mark.slow
def test_gemma3_study_end_to_end_on_a_tiny_gemma(tmp_path, corpus_dir):  # noqa: F811
  folder = tmp_path / "tiny_gemma3"
  save_family("gemma3", folder)
  config = load_config("gemma3")
  assert (config.harvest.model, config.harvest.hook) == ("gemma-3-270m", "blocks.9.resid_post")
  assert (config.sae.n_latents, config.sae.k, config.harvest.skip_first) == (16384, 32, 1)
  assert tuple(config.sweep.architecture) == ("topk", "jumprelu", "relu")
  config = tiny_config(folder, corpus_dir)
  config.harvest.hook = "blocks.1.resid_post"
  results = gemma3_study.run(config, tmp_path / "run")

  methods = [r["method"] for r in results["saes"]["rows"]]
  assert methods == ["SAE (topk)", "SAE (jumprelu)", "SAE (relu)", "PCA top-4",
                     "random TopK-4 (n=64)"]  # fmt: skip
  for row in results["saes"]["rows"]:
    for column in gemma3_report.COLUMNS[1:]:
      if column != "train_dead_fraction" or row["method"].startswith("SAE"):
        assert math.isfinite(row[column]), (row["method"], column)
  assert results["saes"]["rows"][0]["l0"] == pytest.approx(4.0)
  assert math.isfinite(results["lm_eval"]["loss"]) and results["lm_eval"]["bits_per_byte"] > 0
  speed = results["speed"]
  assert speed["jaxsae_tokens_per_s"] > 0 and speed["transformers_stop_tokens_per_s"] > 0
  assert speed["max_abs_diff"] < 1e-4 * max(1.0, speed["max_abs"])  # The same activations.
  assert {"load model", "test-split loss", "harvest", "train SAEs", "SmoothQuant study"} <= set(
    results["stages"]
  )
  assert all(s["seconds"] > 0 for s in results["stages"].values())
  assert [r["smoothing"] for r in results["smoothquant"]["rows"]] == ["none", "naive", "smoothed"]

  docs = tmp_path / "docs"
  gemma3_report.write(tmp_path / "run", docs)  # As --report_only: from the workdir alone.
  page = (docs / "RESULTS.md").read_text()
  for text in ("| method | L0 | FVU |", "SAE (jumprelu)", "random TopK-4", "tokens/s",
               "## Wall time per stage", "### Outlier channels per site", "bits/byte"):  # fmt: skip
    assert text in page, text
  for name in ("results.csv", "figures/w8a8.png", "figures/outliers.png", "smoothquant_w8a8.csv"):
    assert (docs / name).is_file(), name
  assert (tmp_path / "run" / "results.md").is_file()
  assert len((docs / "results.csv").read_text().splitlines()) == 6


def test_bos_windows_put_the_separator_first(corpus_dir):  # noqa: F811
  from jaxsae.text import corpus as corpus_lib
  from jaxsae.text.tokenizer import ByteTokenizer

  corpus = corpus_lib.discover(str(corpus_dir), "**/*.py", 0.02, 0.02)
  tok = ByteTokenizer()
  plain = pipeline.load_windows(corpus, "train", tok, 15)
  bos = pipeline.load_windows(corpus, "train", tok, 16, bos=True)
  assert bos.seq_len == 16 and len(bos) == len(plain) and bos[0].shape == (17,)
  assert bos[3][0] == tok.separator_id
  np.testing.assert_array_equal(bos[3][1:], plain[3])


def test_bad_values_are_listed_together(tmp_path, corpus_dir):  # noqa: F811
  config = tiny_config(tmp_path, corpus_dir)
  config.speed.repeats = 0
  config.evals.delta_ce_windows = 0
  config.smoothquant.seq_len = 2
  config.harvest.seq_len = 2
  with pytest.raises(ConfigError) as error:
    gemma3_study.validate(config)
  assert len(error.value.problems) >= 4, error.value.problems
