"""Bridges between a dense and a weight-sparse transformer: every loss term against its formula
in numpy, identity bridges, AbsTopK, training, saving, errors, and the experiment."""

import json
import math
import subprocess
import sys

import bridge_helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from jaxsae.errors import CheckpointError, ConfigError, JaxsaeError
from jaxsae.models.transformer import run
from jaxsae.sparse import bridges as br
from jaxsae.text import pipeline


@pytest.fixture(scope="module")
def pair():
  return bridge_helpers.dense_and_sparse()


@pytest.fixture(scope="module")
def tokens():
  return np.random.default_rng(0).integers(0, 257, size=(3, 13)).astype(np.int32)


def _np_logp(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_kl(logits_p, logits_q):
  lp, lq = _np_logp(logits_p), _np_logp(logits_q)
  return float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))


def _np_nmse(x_hat, x):
  x_hat, x = np.asarray(x_hat, np.float64), np.asarray(x, np.float64)
  return float(np.sum((x_hat - x) ** 2) / np.sum(x**2))


def _np_abs_topk(x, k):
  x = np.asarray(x)
  keep = np.argsort(-np.abs(x), axis=-1)[..., :k]
  out = np.zeros_like(x)
  np.put_along_axis(out, keep, np.take_along_axis(x, keep, -1), -1)
  return out


def _np_weights(bridges, site):
  return {k: np.asarray(v, np.float64) for k, v in bridges.weights[site].items()}


def test_bridge_sites_in_forward_order():
  assert br.bridge_sites(2) == [
    "blocks.0.resid_pre",
    "blocks.0.resid_mid",
    "blocks.0.resid_post",
    "blocks.1.resid_mid",
    "blocks.1.resid_post",
  ]
  assert br.BridgeConfig(sites=("blocks.1.resid_post", "blocks.0.resid_pre")).resolve_sites(2) == (
    "blocks.0.resid_pre",
    "blocks.1.resid_post",
  )


@pytest.mark.slow
def test_every_term_matches_its_formula(pair, tokens):
  dense, sparse = pair
  sites = ("blocks.0.resid_pre", "blocks.0.resid_post", "blocks.1.resid_mid")
  bridges = br.init_bridges(16, 24, sites, 6, jax.random.key(2))
  got = {k: float(v) for k, v in br.bridge_losses(bridges, dense, sparse, None, tokens).items()}

  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  d_logits, h_d = run(dense.module, dense.params, inputs, capture=sites)
  s_logits, h_s = run(sparse.module, sparse.params, inputs, capture=sites)
  lp = _np_logp(s_logits)
  want = {
    "ce_sparse": float(-np.mean(np.take_along_axis(lp, targets[..., None], -1))),
    "kl_dense_sparse": _np_kl(d_logits, s_logits),
  }
  for site in sites:
    w = _np_weights(bridges, site)
    enc = _np_abs_topk(np.asarray(h_d[site], np.float64) @ w["W_enc"] + w["b_enc"], 6)
    dec = np.asarray(h_s[site], np.float64) @ w["W_dec"] + w["b_dec"]
    assert np.all((enc != 0).sum(-1) == 6)
    want[f"nmse_enc/{site}"] = _np_nmse(enc, h_s[site])
    want[f"nmse_dec/{site}"] = _np_nmse(dec, h_d[site])
    # Hybrids by hand: each model continued from `site` with the bridged numpy activation.
    enc_value, dec_value = jnp.asarray(enc, jnp.float32), jnp.asarray(dec, jnp.float32)
    hyb_s, _ = run(sparse.module, sparse.params, inputs, edits={site: lambda x, v=enc_value: v})
    hyb_d, _ = run(dense.module, dense.params, inputs, edits={site: lambda x, v=dec_value: v})
    want[f"kl_hybrid_enc/{site}"] = _np_kl(d_logits, hyb_s)
    want[f"kl_hybrid_dec/{site}"] = _np_kl(d_logits, hyb_d)
  for term in br.TERMS:
    want[term] = sum(want[f"{term}/{s}"] for s in sites)
  want["total"] = want["ce_sparse"] + want["kl_dense_sparse"] + sum(want[t] for t in br.TERMS)
  assert set(got) == set(want)
  for key, value in want.items():
    assert got[key] == pytest.approx(value, rel=2e-4, abs=1e-5), key
  assert want["kl_dense_sparse"] > 0.01 and all(want[f"kl_hybrid_enc/{s}"] > 0 for s in sites)


@pytest.mark.slow
def test_identity_bridges_between_a_model_and_itself_cost_nothing(pair, tokens):
  dense, _ = pair
  sites = br.bridge_sites(2)
  eye = jnp.eye(16)
  weights = {
    s: {"W_enc": eye, "b_enc": jnp.zeros(16), "W_dec": eye, "b_dec": jnp.zeros(16)} for s in sites
  }
  k = br.BridgeConfig(topk_fraction=1.0).topk_count(dense.config)
  assert k == 16
  terms = br.bridge_losses(br.Bridges(weights, tuple(sites), k), dense, dense, None, tokens)
  for key, value in terms.items():
    if key not in ("ce_sparse", "total"):
      assert abs(float(value)) < 1e-5, key
  assert float(terms["total"]) == pytest.approx(float(terms["ce_sparse"]), abs=1e-4)


def test_encode_keeps_exactly_k_by_magnitude():
  bridges = br.init_bridges(16, 24, ["blocks.0.resid_pre"], 5, jax.random.key(0))
  h = jax.random.normal(jax.random.key(1), (4, 7, 16))
  z = np.asarray(br.encode(bridges, "blocks.0.resid_pre", h))
  w = _np_weights(bridges, "blocks.0.resid_pre")
  pre = np.asarray(h, np.float64) @ w["W_enc"] + w["b_enc"]
  assert np.all((z != 0).sum(-1) == 5)
  np.testing.assert_allclose(z, _np_abs_topk(pre, 5), atol=1e-5)
  assert (pre < 0)[z != 0].any()  # Negative entries of large magnitude are kept too.
  dec = br.decode(bridges, "blocks.0.resid_pre", jnp.asarray(z))
  np.testing.assert_allclose(dec, z @ w["W_dec"] + w["b_dec"], atol=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss(pair):
  dense, sparse = pair
  stream = np.random.default_rng(1).integers(0, 257, size=400).astype(np.uint16)
  windows = pipeline.PackedWindows(stream, 12)
  config = br.BridgeConfig(
    sites=("blocks.0.resid_mid",),
    steps=12,
    batch_size=4,
    lr=3e-2,
    init="random",
    log_every=4,
  )
  start = br.make_bridges(config, dense, sparse, windows)
  before = br.evaluate_bridges(start, dense, sparse, windows, 4, 8)
  result = br.train_bridges(config, dense, sparse, windows, bridges=start)
  after = br.evaluate_bridges(result.bridges, dense, sparse, windows, 4, 8)
  assert after["total"] < before["total"] - 0.1
  assert after["ce_sparse"] == pytest.approx(before["ce_sparse"])  # The models stay frozen.
  assert [h["step"] for h in result.history] == [1, 4, 8, 12]
  assert "kl_hybrid_dec/blocks.0.resid_mid" in result.history[0]

  fitted = br.make_bridges(
    br.BridgeConfig(sites=config.sites, init_windows=16), dense, sparse, windows
  )
  fit_terms = br.evaluate_bridges(fitted, dense, sparse, windows, 4, 8)
  assert fit_terms["nmse_dec"] < before["nmse_dec"]  # Least squares beats a random map.


def test_save_load_round_trip(tmp_path):
  config = br.BridgeConfig(sites=("blocks.0.resid_pre", "blocks.1.resid_mid"), lr=3e-4)
  bridges = br.init_bridges(16, 24, config.sites, 6, jax.random.key(5))
  br.save_bridges(tmp_path / "b", bridges, config, {"note": "x"})
  loaded, loaded_config = br.load_bridges(tmp_path / "b")
  assert loaded.sites == bridges.sites and loaded.k == 6 and loaded_config == config
  for s in config.sites:
    for name, value in bridges.weights[s].items():
      np.testing.assert_array_equal(loaded.weights[s][name], value)
  doc = json.loads((tmp_path / "b" / br.CONFIG_FILE).read_text())
  doc["d_sparse"] = 8
  (tmp_path / "b" / br.CONFIG_FILE).write_text(json.dumps(doc))
  with pytest.raises(CheckpointError, match="has shape"):
    br.load_bridges(tmp_path / "b")
  with pytest.raises(CheckpointError, match="no saved bridges"):
    br.load_bridges(tmp_path / "missing")


def test_bad_input_names_the_problem(pair, tokens):
  dense, sparse = pair
  bridges = br.init_bridges(16, 24, ["blocks.0.resid_pre"], 6, jax.random.key(0))
  with pytest.raises(JaxsaeError, match="no bridge at site"):
    br.encode(bridges, "blocks.1.resid_post", jnp.zeros((2, 16)))
  with pytest.raises(JaxsaeError, match="width 24"):
    br.encode(bridges, "blocks.0.resid_pre", jnp.zeros((2, 24)))
  with pytest.raises(JaxsaeError, match="width 16"):
    br.decode(bridges, "blocks.0.resid_pre", jnp.zeros((2, 16)))
  with pytest.raises(JaxsaeError, match='"blocks.9.resid_mid"'):
    br.BridgeConfig(sites=("blocks.9.resid_mid",)).resolve_sites(2)
  with pytest.raises(JaxsaeError, match="use that"):
    br.check_sites(["blocks.1.resid_pre"], 2)
  swapped = br.init_bridges(24, 16, ["blocks.0.resid_pre"], 4, jax.random.key(0))
  with pytest.raises(JaxsaeError, match="d_dense=24"):
    br.bridge_losses(swapped, dense, sparse, None, tokens)
  with pytest.raises(JaxsaeError, match="windows"):
    br.bridge_losses(bridges, dense, sparse, None, tokens[0])
  with pytest.raises(ConfigError) as e:
    br.BridgeConfig(lr=-1.0, topk_fraction=1.5, steps=0, init="zeros")
  assert len(e.value.problems) == 4


@pytest.mark.slow
def test_experiment_quick_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.bridges",
      "--config=experiments/configs/bridges.py:quick",
      f"--workdir={workdir}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  for name in (
    "results.json",
    "bridges.md",
    "bridges.png",
    "metrics.jsonl",
    "bridges/bridges.json",
  ):
    assert (workdir / name).is_file(), name
  results = json.loads((workdir / "results.json").read_text())

  def numbers(x):
    if isinstance(x, dict):
      return [n for v in x.values() for n in numbers(v)]
    if isinstance(x, list):
      return [n for v in x for n in numbers(v)]
    return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []

  values = numbers({k: v for k, v in results.items() if k != "bridge_config"})
  assert len(values) > 50 and all(math.isfinite(v) for v in values)
  assert results["validation"]["trained"]["total"] > 0
  assert "| blocks.3.resid_mid |" in (workdir / "bridges.md").read_text()
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2, 3]
  assert [r["step"] for r in logged if r["split"] == "validation"] == [0, 3]
  assert "kl_hybrid_enc/blocks.3.resid_mid" in logged[0]
