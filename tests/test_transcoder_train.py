"""Training transcoders on (input, target) pairs: one trainer for both, pairs aligned row by row
from arrays and from activation stores, a scale per site folded at export, exact resume."""

import jax
import numpy as np
import pytest
import sae_helpers

from jaxsae.activations.reader import StoreSource
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.sae import evaluate, export, registry, row_sources, synthetic, train_config
from jaxsae.sae import train as train_lib

pytestmark = pytest.mark.slow  # Trains models in its fixtures: the full tier only.

D, D_OUT = 16, 12
X = synthetic.SyntheticFeatures(d=D, n_features=32, active=3, noise=0.05).generate(4096)
# An "MLP": the target is a fixed nonlinear function of the input, on another scale.
_M1 = np.random.default_rng(0).normal(size=(D, 32)).astype(np.float32)
_M2 = np.random.default_rng(1).normal(size=(32, D_OUT)).astype(np.float32)
Y = (7.0 * np.maximum(X @ _M1, 0) @ _M2 + 0.5).astype(np.float32)


def pairs():
  return row_sources.PairSource(row_sources.ArraySource(X), row_sources.ArraySource(Y))


def tiny_config(**overrides):
  """`sae_helpers.tiny_train_config` with fewer steps and samples (and the default warmup)."""
  fewer = {
    "train.steps": 10,
    "train.log_every": 5,
    "optim.warmup_steps": train_config.base_config().optim.warmup_steps,
    "data.normalization_samples": 1024,
    "data.b_dec_samples": 256,
  }
  return sae_helpers.tiny_train_config(**{**fewer, **overrides})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """TopK, BatchTopK, JumpReLU and ReLU skip transcoders, one vmapped pass, latents split."""
  config = tiny_config(
    **{"sweep.architecture": ("topk", "batchtopk", "jumprelu", "relu"), "sae.skip": True}
  )
  config.mesh.model = 2
  return train_lib.train(config, tmp_path_factory.mktemp("sweep"), pairs())


def test_every_activation_trains_as_a_transcoder_with_its_own_target_scale(sweep):
  assert sweep.target_scale == pytest.approx(np.sqrt(D_OUT / np.mean(np.sum(Y**2, -1))), 0.05)
  assert sweep.scale == pytest.approx(np.sqrt(D / np.mean(np.sum(X**2, -1))), 0.05)
  first, last = sweep.history[0], sweep.history[-1]
  for group in sweep.groups:
    cfg = group.config
    assert (cfg.d_out, cfg.transcode, cfg.skip) == (D_OUT, True, True)
    params = sweep.member_params(group.name)
    assert params["W_dec"].shape == (64, D_OUT) and params["W_skip"].shape == (D, D_OUT)
    label = group.labels[0]
    assert np.isfinite(last[f"{label}/fvu"]) and last[f"{label}/fvu"] < first[f"{label}/fvu"]


def test_exported_transcoders_map_raw_inputs_to_raw_targets(sweep, tmp_path):
  x = X[:256]
  for group in sweep.groups:
    variables = sweep.member_variables(group.name)
    sae = registry.build(group.config)
    trained = np.asarray(sae.apply(variables, x * sweep.scale)) / sweep.target_scale
    export.save(
      tmp_path / group.name, group.config, variables, sweep.scale, None, sweep.target_scale
    )
    config, raw, meta = export.load_folder(tmp_path / group.name)
    assert config == group.config and meta["folded_target_scale"] == sweep.target_scale
    np.testing.assert_allclose(registry.build(config).apply(raw, x), trained, rtol=1e-4, atol=1e-4)
    # Held-out metrics measure the prediction against the target rows.
    metrics = evaluate.reconstruction_metrics(
      group.config, variables, sweep.scale, pairs(), target_scale=sweep.target_scale
    )
    _, y_hat = evaluate.encode_decode(config)(raw, X)
    fvu = np.sum((Y - y_hat) ** 2) / np.sum((Y - Y.mean(0)) ** 2)
    assert metrics["fvu"] == pytest.approx(float(fvu), rel=1e-3)


def test_transcoder_resume_equals_an_uninterrupted_run(tmp_path):
  config = tiny_config(**{"mesh.model": 2, "train.checkpoint_every": 4, "train.steps": 8})
  full = train_lib.train(config, tmp_path / "full", pairs())
  train_lib.train(config, tmp_path / "cut", pairs(), stop_at_step=5)
  resumed = train_lib.train(config, tmp_path / "cut", pairs())
  assert int(resumed.state.step) == 8
  assert (resumed.scale, resumed.target_scale) == (full.scale, full.target_scale)
  for name, value in full.state.params["topk"].items():
    np.testing.assert_array_equal(value, resumed.state.params["topk"][name], err_msg=name)
  # An SAE may not resume a transcoder's checkpoint.
  with pytest.raises((JaxsaeError, CheckpointError), match="another shape|transcode"):
    train_lib.train(config, tmp_path / "cut", row_sources.ArraySource(X[:, :D]))


def _store(path, hooks, values, chunk_rows=64):
  n = len(next(iter(values.values())))
  store = ActivationStore.create(
    path,
    hooks=hooks,
    n_rows=n,
    rows_table=np.zeros((n, 3), np.int32),
    windows=np.zeros((1, 4), np.int32),
    chunk_rows=chunk_rows,
    metadata={"windows_sha256": "same", "skip_separator": True, "skip_first": 0},
  )
  for hook, rows in values.items():
    store.write_rows(hook, 0, rows)
  store.update_meta(rows_written=n, complete=True)
  return store


def test_store_pairs_are_the_same_tokens_from_one_store_or_two(tmp_path):
  n = 1000
  x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)  # Row i holds i.
  y = np.repeat(-np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
  one = _store(tmp_path / "one", {"blocks.0.mlp.in": 3, "blocks.0.mlp.out": 2}, {
    "blocks.0.mlp.in": x, "blocks.0.mlp.out": y})  # fmt: skip
  a = _store(tmp_path / "a", {"blocks.0.mlp.in": 3}, {"blocks.0.mlp.in": x})
  b = _store(tmp_path / "b", {"blocks.0.mlp.out": 2}, {"blocks.0.mlp.out": y})
  for inputs, targets in ((one, one), (a, b)):
    source = row_sources.PairSource(
      StoreSource(inputs, "blocks.0.mlp.in", 4), StoreSource(targets, "blocks.0.mlp.out", 4)
    )
    assert (source.d_in, source.d_out) == (3, 2)
    batches = row_sources.train_batches(source, 100, seed=3)
    seen = []
    for _ in range(12):  # More than an epoch.
      xb, yb = next(batches)
      np.testing.assert_array_equal(xb[:, 0], -yb[:, 0])
      seen.append(xb[:, 0])
    assert len(np.unique(np.concatenate(seen[:10]))) == n  # A shuffled epoch: each row once.
    state = batches.get_state()
    after = next(batches)[0]
    batches.set_state(state)
    np.testing.assert_array_equal(next(batches)[0], after)
  other = _store(tmp_path / "c", {"blocks.0.mlp.out": 2}, {"blocks.0.mlp.out": y}, chunk_rows=32)
  pair = row_sources.PairSource(
    StoreSource(a, "blocks.0.mlp.in"), StoreSource(other, "blocks.0.mlp.out")
  )
  with pytest.raises(JaxsaeError, match="chunk_rows"):
    row_sources.train_batches(pair, 100, seed=3)


def test_a_transcoder_trains_from_a_store(tmp_path):
  store = _store(tmp_path / "s", {"blocks.0.mlp.in": D, "blocks.0.mlp.out": D_OUT}, {
    "blocks.0.mlp.in": X, "blocks.0.mlp.out": Y})  # fmt: skip
  source = row_sources.PairSource(
    StoreSource(store, "blocks.0.mlp.in"), StoreSource(store, "blocks.0.mlp.out")
  )
  result = train_lib.train(tiny_config(**{"train.steps": 4}), tmp_path / "run", source)
  assert result.groups[0].config.d_out == D_OUT and np.isfinite(result.history[-1]["fvu"])
  jax.clear_caches()
