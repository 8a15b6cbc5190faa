"""The main job's pipeline on a tiny config, and the splicing evaluation it relies on."""

import numpy as np
import pytest

from conftest import load_config
from jaxsae import main_job
from jaxsae.errors import ConfigError
from jaxsae.evals import downstream
from jaxsae.models import pretrained
from jaxsae.run_log import read_jsonl
from jaxsae.sae import export


def tiny_main_config():
  c = load_config("main")
  c.harvest.update(train_windows=64, eval_windows=6, seq_len=32, chunk_rows=512)
  c.sae.update(n_latents=128, k=8)
  c.train.update(steps=30, batch_size=128, log_every=10, checkpoint_every=30)
  c.data.update(normalization_samples=512, b_dec_samples=256)
  c.optim.warmup_steps = 3
  return c


@pytest.mark.slow
def test_main_job_pipeline_on_a_tiny_config(tmp_path):
  rows = main_job.run(tiny_main_config(), tmp_path)
  assert [r["method"] for r in rows] == ["SAE (topk)", "PCA top-8", "random TopK-8"]
  sae, pca, rand = rows
  assert sae["l0"] == pytest.approx(8.0) and pca["l0"] == 8.0
  assert sae["fvu"] < rand["fvu"]  # Even 30 steps beat an untrained dictionary.
  for row in rows:
    assert row["ce_zero"] > row["ce_clean"] and np.isfinite(row["delta_ce"])
  for name in (
    "results.md",
    "results.csv",
    "metrics.jsonl",
    "sae/config.json",
    "sae_saelens/cfg.json",
  ):
    assert (tmp_path / name).exists(), name
  assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["step"] == 30
  config, _, meta = export.load(tmp_path / "sae")
  assert config.d_in == 128 and meta["hook"] == "blocks.1.resid_post"
  assert (tmp_path / "store_train" / "store.json").exists()
  again = main_job.run(tiny_main_config(), tmp_path)  # Resumes: nothing to harvest or train.
  assert again[0]["fvu"] == pytest.approx(sae["fvu"], rel=1e-6)


@pytest.mark.slow
def test_splicing_the_identity_changes_nothing_and_zero_ablation_hurts():
  lm = pretrained.load("default")
  text = "import os\n\n\ndef main(argv):\n    return [os.sep, argv]\n" * 4
  ids = lm.encode(text)[: 2 * 33].reshape(2, 33)
  hook = "blocks.1.resid_post"
  reference = downstream.reference_losses(lm, ids, hook)
  out = downstream.splice_losses(lm, ids, hook, lambda v, x: x, None, reference)
  assert out["delta_ce"] == pytest.approx(0.0, abs=1e-6)
  assert out["ce_recovered"] == pytest.approx(1.0, abs=1e-6)
  assert reference["ce_zero"] > reference["ce_clean"] + 0.5


def test_bad_main_config_lists_every_problem():
  c = tiny_main_config()
  c.harvest.seq_len = 0
  c.sae.k = 1000
  with pytest.raises(ConfigError) as info:
    main_job.validate(c)
  assert len(info.value.problems) == 2


@pytest.mark.slow
def test_main_job_can_stream_instead_of_storing(tmp_path):
  config = tiny_main_config()
  config.harvest.streaming = True
  config.train.steps = 10
  rows = main_job.run(config, tmp_path)
  assert not (tmp_path / "store_train").exists() and (tmp_path / "store_validation").exists()
  assert rows[0]["l0"] == pytest.approx(8.0) and np.isfinite(rows[0]["fvu"])


@pytest.mark.slow
def test_the_training_store_may_be_int8_and_the_held_out_store_stays_float32(tmp_path):
  config = tiny_main_config()
  config.harvest.dtype = "int4"
  with pytest.raises(ConfigError, match=r"harvest.dtype='int4' is not one of \['float32', 'bf"):
    main_job.validate(config)
  config.harvest.dtype = "int8"
  main_job.validate(config)
  config.harvest.update(train_windows=8, eval_windows=2)
  data = main_job.harvest_stores(config, pretrained.load("default"), tmp_path)
  assert data.train.store.dtype == "int8" and data.held_out.store.dtype == "float32"
