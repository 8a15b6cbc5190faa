"""The peer-quality study's parts: sparsify's format read and written against sparsify's own
loader, the peers' trainers fed jaxsae's batches, and the study end to end on a tiny config."""

import json

import numpy as np
import pytest
import torch
from sparsify.config import SparseCoderConfig
from sparsify.sparse_coder import SparseCoder

from conftest import load_config
from jaxsae.errors import CheckpointError
from jaxsae.quality import peers, report, study
from jaxsae.sae import evaluate, sparsify_format, synthetic
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.row_sources import ArraySource


def rows(n=2048, d=24, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d)).astype(np.float32)


def batches(x, size=128):
  i = 0
  while True:
    start = (i * size) % len(x)
    yield x[start : start + size]
    i += 1


def sparsify_out(folder, x) -> np.ndarray:
  sae = SparseCoder.load_from_disk(folder)
  with torch.no_grad():
    return sae(torch.from_numpy(x)).sae_out.numpy()


def test_sparsify_folders_round_trip_through_sparsify_itself(tmp_path):
  x = rows()[:256]
  torch.manual_seed(0)
  theirs = SparseCoder(24, SparseCoderConfig(num_latents=96, k=6))
  with torch.no_grad():
    theirs.encoder.bias.normal_()
    theirs.b_dec.normal_()
  theirs.save_to_disk(tmp_path / "theirs")
  config, variables = sparsify_format.load(tmp_path / "theirs")
  assert (config.architecture, config.d_in, config.n_latents, config.k) == ("topk", 24, 96, 6)
  codes, ours = evaluate.encode_decode(config)(variables, x)
  np.testing.assert_allclose(np.asarray(ours), sparsify_out(tmp_path / "theirs", x), atol=1e-5)
  assert np.all(np.sum(np.asarray(codes) != 0, axis=1) <= 6)

  # Written by jaxsae from an SAE trained on scale·x: sparsify's loader reads the raw-x SAE.
  params = {
    k: np.asarray(v) * (1.0 if k == "b_enc" else 0.5) for k, v in variables["params"].items()
  }
  sparsify_format.save(tmp_path / "ours", config, {"params": params}, scale=2.0)
  expected = evaluate.encode_decode(config, 2.0)({"params": params}, x)[1]
  np.testing.assert_allclose(sparsify_out(tmp_path / "ours", x), np.asarray(expected), atol=1e-5)

  with pytest.raises(CheckpointError, match="sparsify stores TopK SAEs; .*saelens.save"):
    sparsify_format.save(tmp_path / "r", SAEConfig("relu", 24, 96), variables)
  cfg = json.loads((tmp_path / "theirs" / "cfg.json").read_text())
  (tmp_path / "theirs" / "cfg.json").write_text(json.dumps(cfg | {"transcode": True}))
  with pytest.raises(
    CheckpointError, match="sparsify transcoder or skip SAE .*zoo.load_transcoder"
  ):
    sparsify_format.load(tmp_path / "theirs")
  with pytest.raises(CheckpointError, match="cfg.json is missing; a sparsify folder"):
    sparsify_format.load(tmp_path)


@pytest.mark.parametrize("optimizer", ["signum", "adam"])
@pytest.mark.slow
def test_sparsify_trainer_learns_and_is_read_back_as_sparsify_saved_it(tmp_path, optimizer):
  features = synthetic.SyntheticFeatures(d=24, n_features=96, active=3, noise=0.05)
  x = np.asarray(features.generate(1 << 13), np.float32)
  run = peers.train_sparsify(
    batches(x), tmp_path, n=96, k=6, steps=400, optimizer=optimizer, warmup_steps=5, threads=1
  )
  _, ours = evaluate.encode_decode(run.config)(run.variables, x[:512])
  np.testing.assert_allclose(np.asarray(ours), sparsify_out(tmp_path, x[:512]), atol=1e-5)
  # Both optimizers reach 0.24 here; a schedule-free wrapper given weight decay (a positional
  # argument slip) ends above 1.
  fvu = evaluate.metrics_of(evaluate.encode_decode(run.config), run.variables, ArraySource(x))
  assert fvu["fvu"] < 0.3, fvu


def test_saelens_trainer_is_read_back_from_its_inference_folder(tmp_path):
  from sae_lens import SAE

  x = rows()
  run = peers.train_saelens(
    "topk", batches(x), tmp_path, d=24, n=96, steps=40, batch_size=128, lr=3e-3, k=6, threads=1
  )
  with torch.no_grad():
    theirs = SAE.load_from_disk(tmp_path)(torch.from_numpy(x[:512])).numpy()
  _, ours = evaluate.encode_decode(run.config)(run.variables, x[:512])
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)
  assert (
    evaluate.metrics_of(evaluate.encode_decode(run.config), run.variables, ArraySource(x))["fvu"]
    < 0.6
  )


@pytest.mark.slow
def test_the_study_compares_every_trainer_on_the_same_batches(tmp_path):
  c = study.base_config()
  tiny = load_config("main")  # Only for its shape: the study's own config is checked below.
  assert c.harvest.hook == tiny.harvest.hook and c.train.steps == tiny.train.steps
  c.harvest.update(train_windows=32, eval_windows=4, seq_len=32, chunk_rows=512)
  c.sae.update(n_latents=128, k=8)
  c.train.update(steps=20, batch_size=128, log_every=10, checkpoint_every=20)
  c.data.update(normalization_samples=512, b_dec_samples=256)
  c.optim.warmup_steps = 3
  c.quality.seeds = "0"
  c.quality.trainers = "jaxsae,sparsify-adam-constant,saelens,saelens-relu,jaxsae-relu"
  c.quality.peer_threads = 1
  with pytest.raises(ValueError, match="quality.lambdas.saelens_relu needs at least two λ"):
    study.run(c, tmp_path)
  c.quality.lambdas.saelens_relu = "0.01,1"
  c.quality.lambdas.jaxsae_relu = "0.003,0.1"
  results = study.run(c, tmp_path)
  names = (
    ["jaxsae", "sparsify-adam-constant", "saelens"] + ["saelens-relu"] * 2 + ["jaxsae-relu"] * 2
  )
  assert [r["trainer"] for r in results] == names
  assert [r["sparsity_coefficient"] for r in results] == [None, None, None, 0.01, 1.0, 0.003, 0.1]
  for r in results[:3]:
    assert r["l0"] == pytest.approx(8.0) and 0 < r["fvu"] < 1 and np.isfinite(r["delta_ce"])
  # A larger L1 penalty, fewer active latents: each λ reaches the SAE (jaxsae's recipes hold
  # their own λ in `overrides`, which once won over the ladder's).
  assert results[3]["l0"] > results[4]["l0"] and results[5]["l0"] > results[6]["l0"]
  assert study.run(c, tmp_path) == results  # Finished runs are kept, not redone.
  written = report.write(tmp_path, tmp_path / "published")
  page = (tmp_path / "published" / "RESULTS.md").read_text()
  assert "## 1× the base budget (20 steps" in page and "SAELens TopK, SAETrainer.fit()" in page
  assert all(p.is_file() for p in written)
  c.quality.trainers = "jaxsae,sparsify-lion"
  with pytest.raises(ValueError, match="unknown \\['sparsify-lion'\\]; choose from"):
    study.run(c, tmp_path)


def test_shards_share_the_runs_between_processes():
  runs = list(range(7))
  shares = [runs[study.share(f"{i}/3")] for i in range(3)]
  assert shares == [[0, 3, 6], [1, 4], [2, 5]] and runs[study.share("0/1")] == runs
  for bad in ("3/3", "1", "a/b", "0/0"):
    with pytest.raises(ValueError, match=f"quality.shard='{bad}': write i/n"):
      study.share(bad)


def test_an_architecture_can_be_read_at_its_own_matched_l0():
  """quality.match_l0: a family that cannot reach L0 = k (Gemma's ReLU) is compared, every
  trainer of it, at another L0, by the same log–log reading of each ladder."""
  run = dict(budget=1, seed=0, delta_ce=0.5, ce_recovered=0.9, dead_fraction=0.0, train_s=1.0)
  rows = [
    {**run, "trainer": "jaxsae", "architecture": "topk", "fvu": 0.3, "l0": 8.0},
    {**run, "trainer": "jaxsae-relu", "architecture": "relu", "sparsity_coefficient": 0.1,
     "fvu": 0.2, "l0": 10.0},
    {**run, "trainer": "jaxsae-relu", "architecture": "relu", "sparsity_coefficient": 0.01,
     "fvu": 0.1, "l0": 40.0},
  ]  # fmt: skip
  config = {"sae": {"k": 8}, "quality": {"match_l0": {"relu": 20.0, "gated": 0.0}}}
  match = report.matched_l0(config)
  assert (match["relu"], match["gated"], match["topk"]) == (20.0, 8, 8)
  by_name = {r["trainer"]: r for r in report.summary_rows(rows, 1, match)}
  assert by_name["jaxsae-relu"]["FVU (mean)"] == pytest.approx(0.02**0.5)  # Halfway in log L0.
  assert by_name["jaxsae-relu"]["L0"].startswith("20 (λ ladder")
  assert by_name["jaxsae"]["FVU (mean)"] == 0.3
  at_k = report.summary_rows(rows, 1, report.matched_l0({"sae": {"k": 8}}))
  assert np.isnan(next(r for r in at_k if r["trainer"] == "jaxsae-relu")["FVU (mean)"])
