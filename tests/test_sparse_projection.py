"""Top-k magnitude projection: exact counts, per-neuron floors, annealing, the real param tree."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae import sharding
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models import transformer as T
from jaxsae.sparse import projection as P

VARIANTS = {
  "gpt2": {},
  "circuits": dict(
    norm="rmsnorm", attention_sink=True, bigram_table=True, tied_embeddings=False, use_bias=False
  ),
  "untied_no_positions": dict(tied_embeddings=False, positions="none", bigram_table=True),
}


def reference_mask(w, k, j, axes):
  """numpy: stable argsort per slice for the floor, then a stable argsort of the rest."""
  a = np.abs(np.asarray(w, np.float32))
  axes = tuple(sorted(ax % w.ndim for ax in axes or ()))
  perm = axes + tuple(i for i in range(w.ndim) if i not in axes)
  a_SxM = a.transpose(perm).reshape(int(np.prod([w.shape[i] for i in axes])), -1)
  j = j if axes else 0
  forced_SxM = np.zeros(a_SxM.shape, bool)
  for s, row in enumerate(a_SxM):
    forced_SxM[s, np.argsort(-row, kind="stable")[: min(j, row.size)]] = True
  forced = forced_SxM.reshape([w.shape[i] for i in perm]).transpose(np.argsort(perm))
  score = np.where(forced, np.inf, a).ravel()
  mask = np.zeros(a.size, bool)
  mask[np.argsort(-score, kind="stable")[:k]] = True
  return mask.reshape(w.shape), forced


# (shape, slice axes, k, j): hidden-matrix layouts, the floor exactly filling k, k = n, no floor.
CASES = [
  ((8, 16), (1,), 70, 4),
  ((16, 8), (0,), 70, 4),
  ((6, 2, 4), (1, 2), 33, 4),
  ((2, 4, 6), (0, 1), 32, 4),
  ((12, 10), (1,), 120, 4),
  ((8, 16), (1,), 40, 1),
  ((16, 8), (0,), 9, 0),
]


def _all_masks(ws, cases):
  """Masks of every case with static k and with traced k: one compile for each path."""

  def masks(ws, ks):
    pairs = zip(ws, ks, cases, strict=True)
    return [P.magnitude_mask(w, k, j, axes) for w, k, (_, axes, _, j) in pairs]

  static = jax.jit(lambda ws: masks(ws, [c[2] for c in cases]))
  traced = jax.jit(masks)
  ks = [jnp.int32(c[2]) for c in cases]
  return [np.asarray(m) for m in static(ws)], [np.asarray(m) for m in traced(ws, ks)]


@pytest.mark.slow
def test_topk_matches_a_numpy_reference_and_keeps_exact_counts():
  rng = np.random.default_rng(0)
  ws = [rng.standard_normal(shape, np.float32) for shape, *_ in CASES]
  statics, traceds = _all_masks(ws, CASES)
  for w, static, traced, (shape, axes, k, j) in zip(ws, statics, traceds, CASES, strict=True):
    expected, forced = reference_mask(w, k, j, axes)
    np.testing.assert_array_equal(static, expected)
    np.testing.assert_array_equal(traced, expected)
    assert static.sum() == k
    # Every slice keeps at least min(j, slice size) entries.
    others = tuple(i for i in range(len(shape)) if i not in axes)
    per_slice = static.sum(axis=others)
    assert per_slice.min() >= min(j, w.size // per_slice.size)
    # Beyond the floor, every kept entry is at least as large as every dropped one.
    a = np.abs(w)
    free_kept = a[static & ~forced]
    if free_kept.size and (~static).any():
      assert free_kept.min() >= a[~static].max()
  w, (_, axes, k, j) = ws[2], CASES[2]
  projected = np.asarray(P.topk_magnitude(w, k, j, axes))
  np.testing.assert_array_equal(projected, np.where(statics[2], w, 0))


def test_the_floor_keeps_entries_below_the_global_kth():
  w = np.random.default_rng(3).standard_normal((8, 6), np.float32)
  w[:, 2] *= 1e-3  # Column 2 (one neuron's inputs) is tiny: a global top-k would drop it.
  k = 12
  (plain, floored), _ = _all_masks([w, w], [(w.shape, None, k, 0), (w.shape, (1,), k, 2)])
  assert plain[:, 2].sum() == 0 and plain.sum() == k
  assert floored.sum() == k and floored.sum(axis=0).min() >= 2
  assert floored[:, 2].sum() == 2
  kth = np.sort(np.abs(w).ravel())[-k]
  assert np.abs(w[floored]).min() < kth  # Kept something smaller than the global k-th.
  np.testing.assert_array_equal(floored, reference_mask(w, k, 2, (1,))[0])


def test_ties_are_broken_by_lower_index_identically_in_both_paths():
  w = np.random.default_rng(4).integers(-2, 3, (10, 12)).astype(np.float32)
  cases = [(w.shape, (1,), k, j) for k, j in [(7, 0), (30, 2), (61, 3), (100, 1)]]
  statics, traceds = _all_masks([w] * len(cases), cases)
  for static, traced, (_, axes, k, j) in zip(statics, traceds, cases, strict=True):
    expected = reference_mask(w, k, j, axes)[0]
    np.testing.assert_array_equal(static, expected)
    np.testing.assert_array_equal(traced, expected)
    assert expected.sum() == k


def test_bfloat16_weights_keep_their_dtype_and_the_float32_selection():
  w16 = jnp.asarray(np.random.default_rng(5).standard_normal((16, 8)), jnp.bfloat16)
  w32 = np.asarray(w16.astype(jnp.float32))
  out, mask = jax.jit(lambda w: (P.topk_magnitude(w, 40, 2, 0), P.magnitude_mask(w32, 40, 2, 0)))(
    w16
  )
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out != 0), np.asarray(mask))


def test_k_below_the_floor_raises_with_the_fix():
  with pytest.raises(
    ConfigError, match="min_per_neuron=4 forces 64 nonzeros but k keeps only 10 of 128"
  ):
    P.magnitude_mask(np.ones((8, 16), np.float32), 10, 4, 1)


def test_annealing_is_dense_then_linear_in_nonzeros_then_the_target():
  target, total = 1 / 64, 1000
  values = {s: float(P.annealed_fraction(s, total, target)) for s in (0, 5, 10, 255, 500, 1000)}
  assert values[0] == values[5] == values[10] == 1.0
  assert values[255] == pytest.approx((1 + target) / 2, rel=1e-6)  # 25.5%: halfway.
  assert values[500] == values[1000] == np.float32(target)
  # Linear in the number of nonzeros (not in log): equal steps remove equal counts.
  f = [float(P.annealed_fraction(s, total, target)) for s in (108, 206, 304)]
  assert f[0] - f[1] == pytest.approx(f[1] - f[2], rel=1e-4)
  traced = jax.jit(lambda s: P.annealed_fraction(s, total, target))(jnp.arange(0, 1001, 255))
  np.testing.assert_allclose(traced, [1.0, (1 + target) / 2, target, target], rtol=1e-6)


def test_config_fractions_follow_each_kind():
  config = P.SparsityConfig(hidden_fraction=1 / 64, embedding_fraction=1 / 16)
  assert {k: float(v) for k, v in config.fractions(10_000, 10_000).items()} == {
    "hidden": np.float32(1 / 64),
    "embedding": np.float32(1 / 16),
  }


def test_bad_config_lists_every_problem():
  with pytest.raises(ConfigError) as info:
    P.SparsityConfig(
      hidden_fraction=0.0, embedding_fraction=1.5, min_per_neuron=-1, anneal_start=2.0
    )
  text = str(info.value)
  assert "4 problem(s)" in text
  for name in ("hidden_fraction=0.0", "embedding_fraction=1.5", "min_per_neuron=-1"):
    assert name in text
  assert "must be in (0, 1]" in text
  with pytest.raises(ConfigError, match="anneal_start=0.6 is after anneal_end=0.5"):
    P.SparsityConfig(1 / 64, 1 / 16, anneal_start=0.6)
  with pytest.raises(ConfigError, match="hidden_fraction=-0.1"):
    P.SparsityConfig(-0.1, 1 / 16)


def _model(variant, **overrides):
  return T.Transformer(tiny_model_config(**{**VARIANTS[variant], "n_layers": 1, **overrides}))


def _params(variant, seed=0, **overrides):
  """Random parameters with the real tree of a one-layer tiny transformer (no eager init)."""
  model = _model(variant, **overrides)
  rng = np.random.default_rng(seed)
  draw = lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * 0.02)  # noqa: E731
  return model, jax.tree.map(draw, T.param_shapes(model))


def _flat(tree):
  return {P.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matrix_kind_covers_every_parameter_of_a_real_transformer(variant):
  model = _model(variant, n_layers=2)
  cfg = model.config
  kinds = {n: P.matrix_kind(n, len(x.shape)) for n, x in _flat(T.param_shapes(model)).items()}
  hidden = {
    f"blocks_{i}/{m}/kernel"
    for i in range(cfg.n_layers)
    for m in ("attn/query", "attn/key", "attn/value", "attn/out", "mlp/fc_in", "mlp/fc_out")
  }
  embedding = {"embed/embedding"} | (set() if cfg.tied_embeddings else {"unembed/kernel"})
  assert {n for n, k in kinds.items() if k == "hidden"} == hidden
  assert {n for n, k in kinds.items() if k == "embedding"} == embedding
  never = {n for n, k in kinds.items() if k is None}
  assert ("bigram" in never) == cfg.bigram_table
  assert ("pos_embed" in never) == (cfg.positions == "learned")
  assert any(n.endswith("attn/sink") for n in never) == cfg.attention_sink
  # Slice axes carry the neuron axis names: mlp, (heads or kv_heads, head_dim), embed (residual).
  boxed = jax.tree_util.tree_flatten_with_path(
    T.abstract_params(model), is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )[0]
  for path, box in boxed:
    kind = P.matrix_kind(path, len(box.value.shape))
    if kind is None:
      continue
    names = tuple(box.names[a] for a in P.neuron_axes(path))
    hidden_names = {("mlp",), ("heads", "head_dim"), ("kv_heads", "head_dim")}
    allowed = hidden_names if kind == "hidden" else {("embed",)}
    assert names in allowed, (P.path_name(path), names)


def test_unknown_matrices_raise_naming_the_path():
  with pytest.raises(JaxsaeError, match="blocks_0/mlp/gate/kernel"):
    P.matrix_kind(("blocks_0", "mlp", "gate", "kernel"), 2)
  assert P.matrix_kind("blocks_0/mlp/gate/scale2", 1) is None  # An unknown vector.
  model, params = _params("gpt2")
  params = {**params, "extra": {"kernel": jnp.ones((4, 4))}}
  config = P.SparsityConfig(1 / 4, 1 / 2)
  with pytest.raises(JaxsaeError, match="'extra/kernel'"):
    P.project(params, {"hidden": 0.5, "embedding": 0.5}, config)
  with pytest.raises(JaxsaeError, match="never projected"):
    P.neuron_axes("blocks_0/attn/query/bias")


def _slice_minimum(w, axes):
  others = tuple(i for i in range(w.ndim) if i not in axes)
  return int(np.asarray(w != 0).sum(axis=others).min())


@pytest.mark.slow
def test_project_whole_tree_matches_the_reference_sharded_or_not_and_leaves_the_rest_alone():
  model, params = _params("circuits", use_bias=True)
  config = P.SparsityConfig(hidden_fraction=1 / 8, embedding_fraction=1 / 4, min_per_neuron=2)
  fractions = {"hidden": 0.3, "embedding": 0.5}
  traced_project = jax.jit(lambda p, f: P.project(p, f, config))
  traced = traced_project(params, jax.tree.map(jnp.float32, fractions))
  # Layer 0 (attention heads and MLP neurons split over a (data 2, model 4) mesh), under jit.
  mesh = sharding.make_mesh(-1, 4)
  shardings = sharding.logical_shardings(T.abstract_params(model), mesh)
  block = {"blocks_0": jax.device_put(params["blocks_0"], shardings["blocks_0"])}
  assert not block["blocks_0"]["mlp"]["fc_in"]["kernel"].sharding.is_fully_replicated
  sharded = _flat(traced_project(block, jax.tree.map(jnp.float32, fractions)))
  before, after = _flat(params), _flat(traced)
  assert sharded.keys() == {n for n in before if n.startswith("blocks_0/")}
  for name, w in before.items():
    if name in sharded:
      np.testing.assert_array_equal(after[name], sharded[name])
    kind = P.matrix_kind(name, w.ndim)
    if kind is None:
      np.testing.assert_array_equal(after[name], w)
      continue
    k = round(fractions[kind] * w.size)
    expected = reference_mask(np.asarray(w), k, 2, P.neuron_axes(name))[0]
    np.testing.assert_array_equal(after[name], np.where(expected, w, 0), err_msg=name)
    assert int(jnp.count_nonzero(after[name])) == k, name
    assert _slice_minimum(after[name], P.neuron_axes(name)) >= 2, name
  # At the target fraction (traced), the count is exactly round(target · n).
  done = traced_project(params, config.fractions(100, 100))
  for name, w in _flat(done).items():
    kind = P.matrix_kind(name, w.ndim)
    if kind is not None:
      assert int(jnp.count_nonzero(w)) == round(config.target(kind) * w.size), name


def test_project_raises_when_the_floor_exceeds_the_target_budget():
  _, params = _params("gpt2")  # fc_in is 32 x 64: 64 neurons x 4 = 256 > 2048 / 64 = 32.
  config = P.SparsityConfig(hidden_fraction=1 / 64, embedding_fraction=1 / 16)
  with pytest.raises(ConfigError) as info:
    P.check_budget(params, config)
  text = str(info.value)
  assert "blocks_0/mlp/fc_in/kernel" in text and "hidden_fraction=0.01562" in text
  assert "lower sparsity.min_per_neuron, or raise the fraction to at least 0.125" in text
  with pytest.raises(ConfigError):
    P.project(params, config.fractions(0, 10), config)
