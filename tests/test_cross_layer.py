"""Cross-layer transcoders: the geometry of `jaxsae.sae.cross_layer` against circuit-tracer's
form of a CLT (`zoo.transcoders`, itself checked against circuit-tracer), the per-layer loss by
hand, and training in the sharded trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sae_helpers

from jaxsae.errors import ConfigError
from jaxsae.sae import cross_layer, export, registry, row_sources, synthetic
from jaxsae.sae import train as train_lib
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.zoo import transcoders

L, D, D_OUT, N, BATCH = 3, 8, 6, 24, 32  # N: every layer's features (8 per layer).


def clt(architecture, **fields):
  return sae_helpers.perturbed_dictionary(
    architecture, d_in=L * D, n_latents=N, batch=BATCH, d_out=L * D_OUT, transcode=True,
    layers=L, **fields,
  )  # fmt: skip


def by_layer(v_BxLD, layers=L):
  """[B, L·d] → [L, B, d], circuit-tracer's layout."""
  return np.asarray(v_BxLD).reshape(v_BxLD.shape[0], layers, -1).transpose(1, 0, 2)


@pytest.mark.parametrize("architecture", ["jumprelu", "relu"])
def test_a_clt_computes_what_its_circuit_tracer_form_computes(architecture):
  """z_l = f(x_l W_enc^l + b_enc^l), ŷ_l′ = Σ_{l ≤ l′} z_l W_dec^{l→l′} + b_dec^l′, on raw
  activations with both scales folded into the record."""
  sae, v, x = clt(architecture)
  c, c_y = 0.7, 1.9
  x_raw = np.asarray(x) / c
  want = np.asarray(sae.apply(v, x)) / c_y
  record = cross_layer.record(sae.config, v["params"], c, c_y)
  assert record.W_enc.shape == (L, D, N // L) and [w.shape[1] for w in record.W_dec] == [3, 2, 1]
  z = transcoders.clt_encode(record, by_layer(x_raw))
  assert 0 < (z != 0).mean() < 1  # Some features fire, some are cut.
  got = transcoders.clt_decode(record, z)
  np.testing.assert_allclose(got, by_layer(want), rtol=1e-4, atol=1e-5)


def test_a_feature_reads_its_own_layer_and_writes_only_its_own_and_later_ones():
  sae, v, x = clt("relu")
  params = v["params"]

  def pre(x):
    return sae.apply(v, x, method=lambda m, x: m.pre_activations(x))

  jac = jax.jacobian(lambda x: pre(x)[0])(x[:1])[:, 0]  # latents × L·d
  reads = np.abs(np.asarray(jac)).reshape(N, L, D).sum(-1) > 0
  np.testing.assert_array_equal(reads, np.arange(N)[:, None] % L == np.arange(L)[None, :])

  def output(z):
    return sae.apply(v, z, method=lambda m, z: m.decode(z))

  writes = np.abs(np.asarray(jax.jacobian(output)(jnp.ones((1, N)))[0])).reshape(L, D_OUT, N)
  writes = writes.sum(1).T > 0  # latents × target layers
  np.testing.assert_array_equal(writes, np.arange(N)[:, None] % L <= np.arange(L)[None, :])
  # The zero blocks get no gradient, so training leaves them at zero.
  grad = jax.grad(lambda p: sae.apply({**v, "params": p}, x).sum())(params)["W_dec"]
  blocks = np.abs(np.asarray(grad)).reshape(N, L, D_OUT).sum(-1) > 0
  assert not blocks[np.arange(N)[:, None] % L > np.arange(L)[None, :]].any()


def test_the_loss_sums_each_layers_normalized_error():
  """Σ_l ‖ỹ_l − ŷ_l‖² / ‖ỹ_l − ȳ_l‖² over the batch, by hand; layers of very different scale
  count alike."""
  sae, v, x = clt("relu")
  y = jax.random.normal(jax.random.key(5), (BATCH, L * D_OUT)) * jnp.repeat(
    jnp.array([0.1, 1.0, 30.0]), D_OUT
  )
  out = sae.apply(v, x, target=y, method=lambda m, x, target: m.loss(x, target=target))
  y_hat, yy = by_layer(sae.apply(v, x)), by_layer(y)
  err = ((yy - y_hat) ** 2).sum((1, 2))
  var = ((yy - yy.mean(1, keepdims=True)) ** 2).sum((1, 2))
  np.testing.assert_allclose(out.terms["reconstruction"], np.sum(err / var), rtol=1e-5)


def test_bad_clt_configs_name_the_fix():
  with pytest.raises(ConfigError) as e:
    SAEConfig("gated", d_in=10, n_latents=8, k=2, layers=3, skip=True)
  text = str(e.value)
  for needle in ("not 'gated'", "sae.transcode=True", "sae.d_in=10 is not a multiple",
                 "sae.n_latents=8", "sae.d_out=10", "sae.skip=False"):  # fmt: skip
    assert needle in text, text


def test_a_topk_clt_trains_split_over_latents_as_on_one_device(tmp_path):
  """Data- and latent-parallel training of a CLT (8 devices, latents over 2) equals one device;
  the error falls and the zero blocks stay zero."""
  rows = synthetic.SyntheticFeatures(d=L * D, n_features=48, active=4, noise=0.05).generate(2048)
  mix = np.random.default_rng(0).normal(size=(L * D, L * D_OUT)).astype(np.float32)
  targets = np.tanh(rows @ mix).astype(np.float32)
  stack = row_sources.StackedSource  # One source per layer, side by side.
  pairs = row_sources.PairSource(
    stack([rows[:, l * D : (l + 1) * D] for l in range(L)]),
    stack([targets[:, l * D_OUT : (l + 1) * D_OUT] for l in range(L)]),
  )

  def run(folder, **mesh):
    config = sae_helpers.tiny_train_config(**{"sae.layers": L, "sae.n_latents": N, **mesh})
    return train_lib.train(config, tmp_path / folder, pairs)

  one = run("one", **{"mesh.data": 1})
  split = run("split", **{"mesh.model": 2})
  w_one = one.member_params(one.groups[0].name)["W_dec"]
  w_split = split.member_params(split.groups[0].name)["W_dec"]
  np.testing.assert_allclose(w_split, w_one, rtol=2e-4, atol=2e-5)
  assert one.history[-1]["fvu"] < one.history[0]["fvu"]
  blocks = np.abs(w_one).reshape(N, L, D_OUT).sum(-1)
  assert (blocks[np.arange(N)[:, None] % L > np.arange(L)[None, :]] == 0).all()
  # Exported with both scales folded, it maps raw inputs to raw targets.
  group, variables = one.groups[0], one.member_variables(one.groups[0].name)
  export.save(tmp_path / "clt", group.config, variables, one.scale, None, one.target_scale)
  config, raw, _ = export.load_folder(tmp_path / "clt")
  assert config.layers == L
  want = (
    np.asarray(registry.build(config).apply(variables, rows[:64] * one.scale)) / one.target_scale
  )
  np.testing.assert_allclose(
    registry.build(config).apply(raw, rows[:64]), want, rtol=1e-4, atol=1e-5
  )


@pytest.mark.slow
def test_a_clt_trained_on_a_models_mlps_replaces_them_through_circuit_tracers_format(tmp_path):
  """A JumpReLU CLT trained on every layer's (mlp.in, mlp.out) of a tiny model, written as
  circuit-tracer writes a CLT and read back by the zoo, is the replacement model's dictionary:
  its per-layer FVU there is the trained module's on the same activations, and training made
  the replacement better than the untrained CLT."""
  from conftest import tiny_circuit_config
  from jaxsae.activations.streaming import StreamingSource
  from jaxsae.evals import replacement
  from jaxsae.models import transformer as T
  from jaxsae.models.language_model import LanguageModel
  from jaxsae.sae import train_config, zoo
  from jaxsae.sae.zoo import circuit_tracer
  from jaxsae.text.tokenizer import ByteTokenizer

  config = tiny_circuit_config()
  lm = LanguageModel(
    config, T.init_params(T.Transformer(config), jax.random.key(0)), ByteTokenizer(), {}
  )
  layers = config.n_layers
  windows = np.random.default_rng(0).integers(1, 256, size=(64, 17)).astype(np.int32)
  ins = [f"blocks.{i}.mlp.in" for i in range(layers)]
  outs = [f"blocks.{i}.mlp.out" for i in range(layers)]
  _, captured = lm.run(windows[:, :-1], capture=ins + outs)
  site = {h: np.asarray(captured[h], np.float32).reshape(-1, config.d_model) for h in ins + outs}
  # Trained streamed from the model: every layer's pair from one forward pass, no store.
  pairs = StreamingSource(lm, windows[:, :-1], ins, target_hook=outs, skip_separator=False)
  assert row_sources.is_paired(pairs) and (pairs.d_in, pairs.d_out) == (layers * 16, layers * 16)
  some = np.array([0, 5, 17, 300])
  for got, hooks in ((pairs.rows(some), ins), (pairs.target_rows(some), outs)):
    np.testing.assert_allclose(got, np.concatenate([site[h][some] for h in hooks], -1), atol=1e-5)
  x_batch, y_batch = pairs.batch(0, 128, seed=0)
  assert x_batch.shape == y_batch.shape == (128, layers * 16)
  train_settings = {
    "sae.architecture": "jumprelu",
    "sae.layers": layers,
    "sae.n_latents": 32 * layers,
  }
  train_settings |= {"sae.k": 8, "train.steps": 60, "optim.lr": 1e-2, "mesh.model": 2}
  tiny = sae_helpers.tiny_train_config(**train_settings)
  tiny.sae.update({**train_config.RECIPES["jumprelu"], "k": 8})
  result = train_lib.train(tiny, tmp_path / "run", pairs)
  group = result.groups[0]
  variables = result.member_variables(group.name)

  def written(params, name):
    record = cross_layer.record(group.config, params, result.scale, result.target_scale, ins, outs)
    return zoo.load_replacement(str(circuit_tracer.write_clt(tmp_path / name, record)))

  trained = written(variables["params"], "trained")
  report = replacement.evaluate(lm, trained, windows)
  sae = registry.build(group.config)
  x = np.concatenate([site[h] for h in ins], -1) * result.scale
  y_hat = by_layer(np.asarray(sae.apply(variables, x)) / result.target_scale, layers)
  for j, h in enumerate(outs):
    fvu = ((site[h] - y_hat[j]) ** 2).sum() / ((site[h] - site[h].mean(0)) ** 2).sum()
    assert report.layers[j]["fvu"] == pytest.approx(fvu, rel=1e-3)
  untrained = result.member_variables(group.name)["params"] | {
    "W_dec": np.zeros_like(variables["params"]["W_dec"])  # Writes b_dec only.
  }
  baseline = replacement.evaluate(lm, written(untrained, "bias_only"), windows)
  assert report.kl < baseline.kl / 5  # (A random model's CE is log 256 either way.)
  assert all(layer["fvu"] < 1 for layer in report.layers)


@pytest.mark.parametrize("architecture", ["relu", "jumprelu"])
def test_the_tanh_penalty_and_its_gradient_by_hand(architecture):
  """λ·mean_t Σ_i tanh(c·|z_i|·‖w_i‖) with ‖w_i‖ over every layer latent i writes; its z-gradient
  is λ·c·‖w_i‖·sech²(c·z_i·‖w_i‖)/B (z ≥ 0)."""
  sae, v, x = clt(architecture, tanh_c=2.0)
  p = v["params"]
  y = jax.random.normal(jax.random.key(5), (BATCH, L * D_OUT))
  out = sae.apply(v, x, y, method=lambda m, x, y: m.loss(x, target=y))
  z = np.asarray(sae.apply(v, x, method=lambda m, x: m.encode(x).latents), np.float64)
  mask = np.arange(L * D_OUT)[None, :] // D_OUT >= np.arange(N)[:, None] % L
  norms = np.linalg.norm(np.asarray(p["W_dec"], np.float64) * mask, axis=-1)
  assert (z > 0).any() and (z == 0).any()
  want = 0.3 * np.tanh(2.0 * z * norms).sum(-1).mean()
  np.testing.assert_allclose(out.terms["sparsity"], want, rtol=1e-5)
  grad = jax.grad(lambda z: sae.apply(v, z, method=lambda m, z: m.tanh_penalty(z)))(
    jnp.asarray(z, jnp.float32)
  )
  np.testing.assert_allclose(
    grad, 2.0 * norms / np.cosh(2.0 * z * norms) ** 2 / BATCH, rtol=1e-4, atol=1e-7
  )


@pytest.mark.parametrize("cross", [True, False])
def test_the_l0_target_penalty_and_clip_are_in_one_layers_units(cross):
  """jumprelu_penalty="target": λ·mean_t (2/k)(Σ_l L0_l − k)²/d_out and the default clip
  1/d_out, with d_out one layer's width: the error is Σ_l of per-layer normalized MSEs, so the
  penalty is the sum of L per-layer ones (over all layers' L·d_out it was L times too weak)."""
  sae, v, x = clt("jumprelu", jumprelu_penalty="target", k=5, cross_layer=cross)
  y = jax.random.normal(jax.random.key(5), (BATCH, L * D_OUT))
  out = sae.apply(v, x, y, method=lambda m, x, y: m.loss(x, target=y))
  pre = np.asarray(sae.apply(v, x, method=lambda m, x: m.pre_activations(x)), np.float64)
  l0 = (pre > np.asarray(v["params"]["threshold"])).sum(-1)
  assert len(set(l0.tolist())) > 1 and (l0 != 5).any()
  want = sae.config.sparsity_coefficient * np.mean((2 / 5) * (l0 - 5) ** 2 / D_OUT)
  np.testing.assert_allclose(out.terms["sparsity"], want, rtol=1e-5)
  assert sae.default_clip_norm == pytest.approx(1 / D_OUT)


def test_one_layer_formats_refuse_a_clt_and_name_its_record():
  from jaxsae.errors import CheckpointError
  from jaxsae.sae import saelens, transcoder_format

  sae, v, _ = clt("relu")
  with pytest.raises(CheckpointError, match="cross_layer.record"):
    transcoder_format.to_record(sae.config, v)
  with pytest.raises(CheckpointError, match="transcoder"):  # SAELens holds one-site SAEs.
    saelens.save("/nonexistent", sae.config, v, 1.0)


@pytest.mark.parametrize("architecture", ["jumprelu", "relu"])
def test_without_cross_layer_writes_the_features_are_per_layer_transcoders(architecture):
  """sae.cross_layer=False: each feature writes its own layer only, and the record is the list
  of per-layer transcoders computing what the module computes (scales folded)."""
  sae, v, x = clt(architecture, cross_layer=False)

  def output(z):
    return sae.apply(v, z, method=lambda m, z: m.decode(z))

  writes = np.abs(np.asarray(jax.jacobian(output)(jnp.ones((1, N)))[0])).reshape(L, D_OUT, N)
  np.testing.assert_array_equal(writes.sum(1).T > 0, np.arange(N)[:, None] % L == np.arange(L))
  # W_dec holds only the written blocks: row g is what latent g writes to layer g mod L.
  assert v["params"]["W_dec"].shape == (N, D_OUT)
  # The block-by-block product is the dense one with each row placed in its own layer's block.
  W = jax.random.normal(jax.random.key(3), (N, D_OUT))
  z = jax.random.normal(jax.random.key(4), (5, N))
  mask = cross_layer.decoder_mask(jnp.arange(N), L, D_OUT, cross=False)
  placed = jnp.tile(W, (1, L)) * mask
  np.testing.assert_allclose(
    cross_layer.own_layer_decode(z, W, L, jnp.matmul), z @ placed, rtol=1e-5, atol=1e-5
  )

  c, c_y = 0.7, 1.9
  want = by_layer(np.asarray(sae.apply(v, x)) / c_y)
  ins, outs = [f"blocks.{i}.mlp.in" for i in range(L)], [f"blocks.{i}.mlp.out" for i in range(L)]
  record = cross_layer.record(sae.config, v["params"], c, c_y, ins, outs)
  assert [type(r).__name__ for r in record] == ["Transcoder"] * L
  assert [(r.input_hook, r.output_hook) for r in record] == list(zip(ins, outs, strict=True))
  fired = 0.0
  for layer, (tc, x_l) in enumerate(zip(record, by_layer(np.asarray(x) / c), strict=True)):
    assert tc.W_enc.shape == (D, N // L) and tc.W_dec.shape == (N // L, D_OUT)
    z = transcoders.encode(tc, x_l)
    fired += (z != 0).mean() / L
    np.testing.assert_allclose(transcoders.decode(tc, z), want[layer], rtol=1e-4, atol=1e-5)
  assert 0 < fired < 1
