"""The weight-sparse optimizer: RMS normalization, sharkfin schedule, one full update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_sparse_projection import reference_mask

from conftest import tiny_model_config
from jaxsae.errors import ConfigError
from jaxsae.models import transformer as T
from jaxsae.sparse import optim as O
from jaxsae.sparse import projection as P
from jaxsae.train_state import TrainState

CONFIG = P.SparsityConfig(hidden_fraction=1 / 64, embedding_fraction=1 / 16)


def test_global_rms_normalizes_a_hand_made_tree():
  grads = {
    "a": jnp.array([3.0, 4.0]),
    "b": {"c": jnp.zeros((1, 2)), "d": jnp.zeros((), jnp.bfloat16)},
  }
  out, _ = O.scale_by_global_rms().update(grads, optax.EmptyState())
  rms = 5.0 / np.sqrt(5)  # ‖g‖ = 5 over N = 5 entries.
  np.testing.assert_allclose(out["a"], np.array([3.0, 4.0]) / (rms + 1e-5), rtol=1e-6)
  np.testing.assert_array_equal(out["b"]["c"], np.zeros((1, 2)))
  assert out["b"]["d"].dtype == jnp.bfloat16
  total = sum(float(jnp.sum(jnp.square(x.astype(jnp.float32)))) for x in jax.tree.leaves(out))
  assert np.sqrt(total / 5) == pytest.approx(1.0, rel=1e-4)
  zeros, _ = O.scale_by_global_rms().update(jax.tree.map(jnp.zeros_like, grads), None)
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(zeros))


def test_sharkfin_factor_is_sqrt_of_target_over_current_fraction():
  steps = np.array([0, 10, 100, 255, 400, 500, 900])
  got = dict(zip(steps.tolist(), np.asarray(O.sharkfin_factor(steps, 1000, CONFIG)), strict=True))
  assert got[0] == got[10] == pytest.approx(1 / 8)  # Dense: √(1/64).
  assert got[500] == got[900] == pytest.approx(1.0)  # Fully sparse: base_lr itself.
  now = np.asarray(P.annealed_fraction(steps, 1000, 1 / 64))
  np.testing.assert_allclose(list(got.values()), np.sqrt((1 / 64) / now), rtol=1e-6)
  assert got[255] == pytest.approx(np.sqrt((1 / 64) / ((1 + 1 / 64) / 2)), rel=1e-6)
  assert got[10] < got[100] < got[255] < got[400] < got[500]  # Rises while sparsifying.


def test_learning_rate_warms_up_decays_and_follows_the_sharkfin():
  total, base = 1000, 1.28e-2
  steps = np.array([0, 5, 10, 300, 505, 1000])
  plain = dict(zip(steps.tolist(), np.asarray(O.learning_rate(steps, total, base)), strict=True))
  assert plain[0] == 0.0 and plain[1000] == 0.0
  assert plain[5] == pytest.approx(base / 2)
  assert plain[10] == pytest.approx(base)
  assert plain[505] == pytest.approx(base / 2)  # (1000 − 505) / (1000 − 10).
  shark = np.asarray(O.sharkfin_factor(steps, total, CONFIG))
  with_config = np.asarray(O.learning_rate(steps, total, base, config=CONFIG))
  np.testing.assert_allclose(with_config, np.array(list(plain.values())) * shark, rtol=1e-6)
  opt = O.make_optimizer(CONFIG, total)
  assert float(opt.learning_rate(505)) == pytest.approx(base / 2)  # Sharkfin is 1 after 50%.


def test_bad_optimizer_settings_are_all_reported():
  with pytest.raises(ConfigError) as info:
    O.make_optimizer(CONFIG, 0, base_lr=-1.0, weight_decay=-0.1, warmup=1.0)
  text = str(info.value)
  assert "4 problem(s)" in text
  for name in ("total_steps=0", "base_lr=-1.0", "weight_decay=-0.1", "warmup=1.0"):
    assert name in text


# One tiny one-layer transformer with every kind of parameter, one optimizer, one compiled step.
MODEL = T.Transformer(
  tiny_model_config(
    n_layers=1,
    norm="rmsnorm",
    attention_sink=True,
    bigram_table=True,
    tied_embeddings=False,
    use_bias=True,
  )
)
SMALL = P.SparsityConfig(hidden_fraction=1 / 8, embedding_fraction=1 / 4, min_per_neuron=2)
OPT = O.make_optimizer(SMALL, total_steps=100, base_lr=0.5)
STEP = jax.jit(OPT.sparse_step_update)
INIT = jax.jit(OPT.init)


def _params(seed):
  """Random parameters with the real tree of MODEL (no eager init)."""
  rng = np.random.default_rng(seed)
  draw = lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * 0.02)  # noqa: E731
  return jax.tree.map(draw, T.param_shapes(MODEL))


def _flat(tree):
  return {P.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _expected_count(fraction, numel):
  return round(float(np.float32(fraction) * np.float32(numel)))


@pytest.mark.slow
def test_a_zero_gradient_step_projects_then_decays_only_the_matrices():
  params = _params(0)
  state = jax.eval_shape(lambda p: TrainState.create(p, OPT), params)  # The shared train state.
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(INIT(params))
  step = 30  # Mid-annealing.
  zeros = jax.tree.map(np.zeros_like, params)
  new, _ = STEP(params, zeros, INIT(params), step)
  lr = float(OPT.learning_rate(step))
  assert lr > 0
  fractions = {k: float(v) for k, v in OPT.fractions(step).items()}
  assert 1 / 8 < fractions["hidden"] < 1
  for name, w in _flat(new).items():
    kind = P.matrix_kind(name, w.ndim)
    if kind is None:  # Biases, norm scales, sink, positions, bigram: untouched.
      np.testing.assert_array_equal(w, _flat(params)[name], err_msg=name)
      continue
    k = _expected_count(fractions[kind], w.size)
    kept = reference_mask(_flat(params)[name], k, 2, P.neuron_axes(name))[0]
    projected = np.where(kept, _flat(params)[name], 0)
    np.testing.assert_allclose(w, projected * (1 - 0.1 * lr), rtol=1e-6, err_msg=name)
    assert int(jnp.count_nonzero(w)) == k, name


def test_a_pruned_weight_with_a_large_gradient_regrows_and_moments_stay_dense():
  params = _params(1)
  zeros = jax.tree.map(np.zeros_like, params)
  params, _ = STEP(params, zeros, INIT(params), 60)  # Zero gradient: project to the targets.
  fc_in = np.asarray(params["blocks_0"]["mlp"]["fc_in"]["kernel"])
  i, j = np.argwhere(fc_in == 0)[0]
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda p: rng.standard_normal(p.shape, np.float32) * 1e-3, params)
  grads["blocks_0"]["mlp"]["fc_in"]["kernel"][i, j] = -1.0
  step = 60  # Past annealing: the kept fractions are the targets.
  new, opt_state = STEP(params, grads, INIT(params), step)
  w = np.asarray(new["blocks_0"]["mlp"]["fc_in"]["kernel"])
  assert w[i, j] > 0.1  # Regrew: Adam moved it by ≈ lr, far above the ≈0.02 weights.
  assert np.count_nonzero(w) == round(fc_in.size / 8)  # Still exactly k: another one fell out.
  mu = np.asarray(opt_state[1].mu["blocks_0"]["mlp"]["fc_in"]["kernel"])
  assert np.all(mu != 0)  # Moments are dense, pruned positions included.
  assert np.any((w == 0) & (mu != 0))
  # numpy reference of the dense part: ĝ = g / (rms + 1e-5); Adam's first step is ĝ/(|ĝ| + 0.1).
  leaves = jax.tree.leaves(grads)
  rms = np.sqrt(
    sum(float(np.sum(g.astype(np.float64) ** 2)) for g in leaves) / sum(g.size for g in leaves)
  )
  lr = float(OPT.learning_rate(step))
  before, after, g = _flat(params), _flat(new), _flat(grads)
  for name, p in before.items():
    g_hat = g[name] / (rms + 1e-5)
    stepped = np.asarray(p) - lr * g_hat / (np.abs(g_hat) + 0.1)
    kind = P.matrix_kind(name, p.ndim)
    if kind is None:  # Updated by Adam, never decayed nor projected.
      np.testing.assert_allclose(after[name], stepped, rtol=1e-5, atol=1e-7, err_msg=name)
      continue
    kept = np.asarray(after[name]) != 0
    assert kept.sum() == _expected_count(SMALL.target(kind), p.size), name
    np.testing.assert_allclose(
      np.asarray(after[name])[kept], stepped[kept] * (1 - 0.1 * lr), rtol=1e-5, err_msg=name
    )
