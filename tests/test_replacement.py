"""The replacement model (jaxsae.evals.replacement) on a tiny random ReLU-MLP transformer."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tiny_circuit_config
from jaxsae.errors import JaxsaeError
from jaxsae.evals import replacement
from jaxsae.models import pretrained
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.sae import zoo
from jaxsae.sae.zoo import circuit_tracer
from jaxsae.sae.zoo import transcoders as tc_lib
from jaxsae.text.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def lm():
  config = tiny_circuit_config(activation="relu")  # MLP = ReLU(x W_in) W_out: a transcoder.
  params = T.init_params(T.Transformer(config), jax.random.key(0))
  return LanguageModel(config, params, ByteTokenizer(), {})


@pytest.fixture(scope="module")
def windows():
  rng = np.random.default_rng(0)
  return rng.integers(1, 256, size=(4, 13)).astype(np.int32)  # No separator: every position.


def _hooks(layer):
  return {"input_hook": f"blocks.{layer}.mlp.in", "output_hook": f"blocks.{layer}.mlp.out"}


def _exact(lm) -> list[tc_lib.Transcoder]:
  """Each layer's own MLP as a ReLU transcoder: the replacement model is the model."""
  out = []
  for layer in range(lm.config.n_layers):
    mlp = lm.params[f"blocks_{layer}"]["mlp"]
    W_in, W_out = np.asarray(mlp["fc_in"]["kernel"]), np.asarray(mlp["fc_out"]["kernel"])
    b_enc, b_dec = np.zeros(W_in.shape[1], np.float32), np.zeros(W_out.shape[1], np.float32)
    out.append(tc_lib.Transcoder(W_in, b_enc, W_out, b_dec, "relu", **_hooks(layer)))
  return out


def _random(lm, seed, n=24) -> list[tc_lib.Transcoder]:
  rng = np.random.default_rng(seed)
  d = lm.config.d_model
  out = []
  for layer in range(lm.config.n_layers):
    w = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)  # noqa: E731
    threshold = np.abs(w(n))
    out.append(
      tc_lib.Transcoder(w(d, n), w(n), w(n, d), w(d), "jumprelu", threshold, **_hooks(layer))
    )
  return out


def _random_clt(lm, seed, n=12) -> tc_lib.CrossLayerTranscoder:
  rng = np.random.default_rng(seed)
  L, d = lm.config.n_layers, lm.config.d_model
  w = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)  # noqa: E731
  return tc_lib.CrossLayerTranscoder(
    w(L, d, n),
    w(L, n),
    tuple(w(n, L - i, d) for i in range(L)),
    w(L, d),
    "relu",
    input_hooks=tuple(f"blocks.{i}.mlp.in" for i in range(L)),
    output_hooks=tuple(f"blocks.{i}.mlp.out" for i in range(L)),
  )


def test_the_models_own_mlps_replace_it_exactly(lm, windows):
  tokens = windows[:, :-1]
  original, _ = lm.run(tokens)
  replaced = replacement.run_replacement(lm, _exact(lm), tokens)
  np.testing.assert_allclose(replaced, original, atol=1e-4)
  report = replacement.evaluate(lm, _exact(lm), windows)
  assert [round(layer["fvu"], 6) for layer in report.layers] == [0.0, 0.0]
  assert report.ce_replacement == pytest.approx(report.ce_original, abs=1e-5)
  assert abs(report.kl) < 1e-5
  _, captured = lm.run(tokens, capture=["blocks.0.mlp.pre", "blocks.1.mlp.pre"])
  for layer in range(2):  # L0: the positive pre-activations of each MLP.
    expected = (np.asarray(captured[f"blocks.{layer}.mlp.pre"]) > 0).sum(-1).mean()
    assert report.layers[layer]["l0"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["transcoders", "clt"])
def test_error_terms_give_back_the_original_logits(lm, windows, kind):
  dictionaries = _random(lm, 1) if kind == "transcoders" else _random_clt(lm, 1)
  tokens = windows[:, :-1]
  original, _ = lm.run(tokens)
  without = replacement.run_replacement(lm, dictionaries, tokens)
  with_errors = replacement.run_replacement(lm, dictionaries, tokens, error_terms=True)
  np.testing.assert_allclose(with_errors, original, atol=1e-4)
  assert np.abs(np.asarray(without) - np.asarray(original)).max() > 1e-2  # Random: not exact.


def test_each_clt_output_sums_every_earlier_layers_features(lm, windows):
  """The replacement's mlp.out at layer j is numpy's CLT decode of the replacement's own MLP
  inputs (zoo.transcoders, an independent implementation)."""
  clt = _random_clt(lm, 2)
  tokens = windows[:, :-1]
  sources, targets = replacement._plan(clt)
  keep = replacement._keep(tokens, lm.tokenizer.separator_id, 0)
  names = [*clt.input_hooks, *clt.output_hooks]
  _, captured = T.run(
    T.Transformer(lm.config),
    lm.params,
    tokens,
    capture=names,
    edits=replacement._edits(sources, targets, keep),
  )
  x = np.stack([np.asarray(captured[h]).reshape(-1, lm.config.d_model) for h in clt.input_hooks])
  expected = tc_lib.clt_decode(clt, tc_lib.clt_encode(clt, x))
  for j, hook in enumerate(clt.output_hooks):
    got = np.asarray(captured[hook]).reshape(-1, lm.config.d_model)
    np.testing.assert_allclose(got, expected[j], rtol=1e-4, atol=1e-4)


def test_per_layer_fvu_and_l0_match_numpy_on_the_original_activations(lm, windows):
  dictionaries = _random(lm, 3)
  report = replacement.evaluate(lm, dictionaries, windows, skip_first=2, batch_size=3)
  hooks = [h for tc in dictionaries for h in (tc.input_hook, tc.output_hook)]
  _, captured = lm.run(windows[:, :-1], capture=hooks)
  for layer, tc in enumerate(dictionaries):
    x = np.asarray(captured[tc.input_hook])[:, 2:].reshape(-1, lm.config.d_model)
    y = np.asarray(captured[tc.output_hook])[:, 2:].reshape(-1, lm.config.d_model)
    z = tc_lib.encode(tc, x)
    fvu = ((y - tc_lib.decode(tc, z)) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert report.layers[layer]["fvu"] == pytest.approx(fvu, rel=1e-4)
    assert report.layers[layer]["l0"] == pytest.approx((z != 0).sum(-1).mean(), rel=1e-5)
  assert report.delta_ce > 0 and report.kl > 0
  assert len(report.rows()) == 2 and report.rows()[0]["delta_ce"] == report.delta_ce


def test_bad_dictionaries_name_the_problem(lm, windows):
  tokens = windows[:, :-1]
  backwards = [
    tc_lib.Transcoder(
      **{**vars_of(tc), "input_hook": "blocks.1.mlp.in", "output_hook": "blocks.0.mlp.out"}
    )
    for tc in _exact(lm)[:1]
  ]
  with pytest.raises(JaxsaeError, match="reaches later"):
    replacement.run_replacement(lm, backwards, tokens)
  unnamed = [tc_lib.Transcoder(**{**vars_of(tc), "input_hook": None}) for tc in _exact(lm)]
  with pytest.raises(JaxsaeError, match="no input hook"):
    replacement.run_replacement(lm, unnamed, tokens)


def vars_of(tc):
  return {f: getattr(tc, f) for f in tc.__dataclass_fields__}


def test_a_circuit_tracer_set_folder_loads_as_a_replacement_model(lm, windows, tmp_path):
  folder = circuit_tracer.write_set(tmp_path / "set", dict(enumerate(_exact(lm))))
  loaded = zoo.load_replacement(str(folder))
  assert [tc.output_hook for tc in loaded] == ["blocks.0.mlp.out", "blocks.1.mlp.out"]
  report = replacement.evaluate(lm, loaded, windows)
  assert max(layer["fvu"] for layer in report.layers) < 1e-6


@pytest.mark.slow
def test_the_experiment_writes_the_report_of_a_saved_model_and_set(lm, tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(40):
    (corpus / f"f{i}.txt").write_text(f"value_{i} = [{i}, {i + 1}]  # row {i}\n" * 30)
  meta = {"corpus": str(corpus), "pattern": "*.txt", "validation_fraction": 0.3}
  meta["test_fraction"] = 0.1
  model = pretrained.save(tmp_path / "model", lm.config, lm.params, lm.tokenizer, meta)
  folder = circuit_tracer.write_set(tmp_path / "set", dict(enumerate(_exact(lm))))
  workdir = tmp_path / "out"
  command = [sys.executable, "-m", "experiments.replacement", f"--transcoders={folder}"]
  command += [f"--model={model}", "--windows=6", "--seq_len=16", f"--workdir={workdir}"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  assert [r["hook"] for r in rows] == ["blocks.0.mlp.out", "blocks.1.mlp.out"]
  assert all(r["fvu"] < 1e-6 and abs(r["delta_ce"]) < 1e-4 for r in rows)  # Its own MLPs.
  assert "| layer | hook | fvu |" in (workdir / "results.md").read_text()
