"""jaxsae.quant: int8 fake quantization, SmoothQuant folding, channel statistics and the W8A8
study, on tiny models, the shipped model and a tiny random Hugging Face GPT-2."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_hf_gpt2 import corpus_dir, tiny  # noqa: F401  (fixtures)

from conftest import load_config, tiny_circuit_config, tiny_model_config
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.lm import config as lm_config
from jaxsae.models import pretrained, transformer
from jaxsae.models.language_model import LanguageModel
from jaxsae.quant import fake_quant, linear_inputs, smoothing, study
from jaxsae.quant import stats as stats_lib
from jaxsae.quant.w8a8 import Evaluator, Scheme
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline
from jaxsae.text.tokenizer import ByteTokenizer


def outlier_data(rng, shape=(64, 48)):
  x = rng.normal(size=shape).astype(np.float32)
  x[:, 5, ...] *= 80.0  # An outlier (input) channel.
  x[:, 7, ...] = 0.0  # A dead one.
  return x


@pytest.mark.slow
def test_fake_quantization_round_trips_within_half_a_step():
  x = outlier_data(np.random.default_rng(0))
  step_token = np.abs(x).max(axis=1, keepdims=True) / 127
  for mode, step in (("per_token", step_token), ("per_tensor", np.abs(x).max() / 127)):
    y = np.asarray(fake_quant.quantize_activation(jnp.asarray(x), mode))
    assert np.all(np.abs(y - x) <= step / 2 + 1e-6 * np.abs(x)), mode
    codes = np.round(y / step)
    np.testing.assert_allclose(codes * step, y, rtol=1e-6, atol=1e-7)  # On the int8 grid.
    assert np.abs(codes).max() <= 127
  # Per head: one step per token over heads x dims.
  z = x.reshape(64, 6, 8)
  y = np.asarray(fake_quant.quantize_activation(jnp.asarray(z), "per_token", per_head=True))
  assert np.all(np.abs(y - z) <= step_token[:, :, None] / 2 + 1e-6 * np.abs(z))
  # Weights: one step per output channel (axes after the input axes), or one per tensor.
  kernel = np.swapaxes(outlier_data(np.random.default_rng(1), (4, 48, 8)), 0, 1)
  out_step = np.abs(kernel).max(axis=0, keepdims=True) / 127
  w = np.asarray(fake_quant.quantize_weight(jnp.asarray(kernel), 1, "per_channel"))
  assert np.all(np.abs(w - kernel) <= out_step / 2 + 1e-6 * np.abs(kernel))
  w = np.asarray(fake_quant.quantize_weight(jnp.asarray(kernel), 1, "per_tensor"))
  assert np.all(np.abs(w - kernel) <= np.abs(kernel).max() / 254 + 1e-6 * np.abs(kernel))
  assert len(np.unique(w)) <= 255
  # Zeros stay zero; a static scale clips what lies beyond it.
  assert np.all(np.asarray(fake_quant.quantize_activation(jnp.zeros((3, 4)), "per_token")) == 0)
  y = fake_quant.quantize_activation(jnp.asarray([[-9.0, 0.5, 2.0]]), "per_tensor_static",
                                     static_absmax=jnp.float32(1.27))  # fmt: skip
  np.testing.assert_allclose(np.asarray(y), [[-1.27, 0.5, 1.27]], atol=1e-6)
  with pytest.raises(JaxsaeError, match="per_tensor_static"):
    fake_quant.quantize_activation(jnp.ones((2, 2)), "per_tensor_static")
  with pytest.raises(JaxsaeError, match="unknown activation quantization 'per_row'"):
    fake_quant.quantize_activation(jnp.ones((2, 2)), "per_row")


def test_smoothing_scales_follow_equation_4():
  a = np.array([4.0, 0.0, 9.0, 1.0])
  w = np.array([1.0, 2.0, 0.25, 0.0])
  s = smoothing.smoothing_scales(a, w, 0.5)
  np.testing.assert_allclose(s, [2.0, 1.0, 6.0, 1.0], rtol=1e-6)  # sqrt(a/w); dead -> 1.
  np.testing.assert_allclose(
    smoothing.smoothing_scales(a, w, 0.75), [4**0.75, 1, 9**0.75 / 0.25**0.25, 1], rtol=1e-6
  )
  smoothed_act, smoothed_w = a / s, w * s
  np.testing.assert_allclose(smoothed_act[[0, 2]], smoothed_w[[0, 2]], rtol=1e-6)  # α=0.5 balances.
  with pytest.raises(JaxsaeError, match="alpha=1.5"):
    smoothing.smoothing_scales(a, w, 1.5)


def random_lm(config, seed=0):
  """The shipped model's wrapper around random parameters (norm gains and biases perturbed)."""
  shapes = transformer.param_shapes(transformer.Transformer(config))
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
    lambda s: (0.3 * rng.normal(size=s.shape) + (1.0 if len(s.shape) == 1 else 0.0)).astype(
      np.float32
    ),
    shapes,
  )
  return LanguageModel(config, params, ByteTokenizer())


def tokens_for(config, seed=0):
  return (
    np.random.default_rng(seed).integers(0, config.vocab_size, (4, config.max_len)).astype(np.int32)
  )


@pytest.mark.parametrize(
  "config",
  [tiny_model_config(), tiny_circuit_config(attention_sink=True, bigram_table=True)],
  ids=["layernorm", "rmsnorm_sink"],
)
@pytest.mark.slow
def test_smoothing_leaves_float_outputs_equal(config):
  lm = random_lm(config)
  tokens = tokens_for(config)
  stats = stats_lib.channel_stats(lm, tokens, progress=False)
  sites = ("attn.in", "mlp.in", "attn.z")
  params, scales = smoothing.smooth(lm.params, config, stats, 0.5, sites)
  assert set(scales) == set(linear_inputs.all_hooks(config.n_layers, sites))
  assert all(np.ptp(s) > 0.1 for s in scales.values())  # Real, uneven rescaling.
  before, _ = lm.run(tokens)
  after, _ = dataclasses.replace(lm, params=params).run(tokens)
  np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=0, atol=1e-5)
  # The smoothed inputs are the old ones divided by s: recomputed equals derived.
  derived = smoothing.smoothed_stats(stats, scales)
  again = stats_lib.channel_stats(lm, tokens, params=params, progress=False)
  for hook in stats.hooks():
    expected = derived.absmax[hook]
    np.testing.assert_allclose(
      again.absmax[hook], expected, rtol=1e-4, atol=1e-5 * expected.max(), err_msg=hook
    )
  # After smoothing at α = 0.5, activation and weight maxima agree channel by channel.
  hook = "blocks.0.mlp.in"
  w_max = linear_inputs.weight_channel_absmax(params, 0, "mlp.in")
  np.testing.assert_allclose(derived.absmax[hook], w_max, rtol=1e-4)


@pytest.mark.slow
def test_smoothing_a_loaded_gpt2_leaves_its_logits_equal(tiny):  # noqa: F811
  folder, _ = tiny
  lm = pretrained.load(folder)
  tokens = tokens_for(lm.config)[:, :32]
  stats = stats_lib.channel_stats(lm, tokens, progress=False)
  params, _ = smoothing.smooth(lm.params, lm.config, stats, 0.5, ("attn.in", "mlp.in", "attn.z"))
  before, _ = lm.run(tokens)
  after, _ = transformer.run(lm.module, params, tokens)
  np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=0, atol=1e-5)


def test_smoothing_refuses_what_it_cannot_fold():
  config = tiny_circuit_config(activation_topk_fraction=0.5)
  lm = random_lm(config)
  stats = stats_lib.channel_stats(lm, tokens_for(config), progress=False)
  with pytest.raises(JaxsaeError, match="AbsTopK"):
    smoothing.smooth(lm.params, config, stats, 0.5)
  dense = tiny_model_config()
  with pytest.raises(JaxsaeError, match="follows a GELU"):
    smoothing.smooth(random_lm(dense).params, dense, stats, 0.5, ("mlp.post",))


@pytest.mark.slow
def test_smoothing_recovers_w8a8_loss_lost_to_an_outlier_channel():
  """Give the shipped model a float-equivalent outlier channel at every attention input (norm
  gain ×40, the kernel rows reading it ÷40): per-tensor W8A8 loses much of the loss; SmoothQuant
  (α = 0.5) moves the scale back into the weights and recovers it."""
  lm = pretrained.load("default")
  data = lm_config.base_config().data
  corpus = corpus_lib.discover("stdlib", "**/*.py", data.validation_fraction, data.test_fraction)
  seq_len = 128
  train = pipeline.load_split(corpus, "train", lm.tokenizer, seq_len).windows
  test = pipeline.load_split(corpus, "test", lm.tokenizer, seq_len).windows
  calibration = pipeline.sample_windows(train, 16, 0, "train")[:, :-1]

  channel, factor = 17, 40.0
  params = smoothing.with_outlier_channel(lm.params, lm.config, channel, factor)
  np.testing.assert_allclose(params["blocks_2"]["attn_norm"]["scale"][channel],
                             factor * lm.params["blocks_2"]["attn_norm"]["scale"][channel], rtol=1e-6)  # fmt: skip
  spiked = dataclasses.replace(lm, params=params)

  def losses(model):
    stats = stats_lib.channel_stats(model, calibration, progress=False)
    ev = Evaluator(model, test, stats, batch_size=8, max_sequences=16)
    scheme = lambda alpha: Scheme("per_channel", "per_tensor_static", alpha)  # noqa: E731
    return (
      stats,
      ev.float_loss().loss,
      ev.scheme_loss(scheme(None)).loss,
      ev.scheme_loss(scheme(0.5)).loss,
    )

  stats, f0, naive0, _ = losses(lm)
  spiked_stats, f1, naive1, smooth1 = losses(spiked)
  assert f1 == pytest.approx(f0, abs=1e-5)  # The spike changes nothing in float.
  row = next(
    r for r in stats_lib.outlier_rows(spiked_stats) if r["layer"] == 0 and r["site"] == "attn.in"
  )
  assert row["top channels"].startswith(f"{channel}:") and row["outlier channels"] >= 1
  assert naive1 - f1 > 10 * (naive0 - f0) and naive1 - f1 > 0.02  # The outlier hurts W8A8...
  assert smooth1 - f1 < 0.25 * (naive1 - f1)  # ...and smoothing recovers most of it.


def test_channel_statistics_save_load_and_percentiles(tmp_path):
  config = tiny_model_config()
  lm = random_lm(config)
  tokens = tokens_for(config)
  stats = stats_lib.channel_stats(lm, tokens, levels=(50.0, 100.0), progress=False)
  assert stats.hooks()[-1] == "final.normed"  # The unembedding's input: a linear layer's too.
  assert len(stats.hooks()) == 4 * config.n_layers + 1
  _, captured = lm.run(tokens, capture=stats.hooks())
  for hook in stats.hooks():
    values = np.abs(np.asarray(captured[hook])).reshape(tokens.size, -1)
    np.testing.assert_allclose(stats.absmax[hook], values.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats.percentiles[hook][0], np.median(values, 0), rtol=1e-5)
    np.testing.assert_allclose(stats.percentiles[hook][1], values.max(0), rtol=1e-6)
  stats.save(tmp_path / "s.safetensors")
  loaded = stats_lib.ChannelStats.load(tmp_path / "s.safetensors")
  assert loaded.levels == (50.0, 100.0) and loaded.tokens == tokens.size
  for hook in stats.hooks():
    np.testing.assert_array_equal(loaded.absmax[hook], stats.absmax[hook])


@pytest.mark.slow
def test_study_writes_tables_and_figures_for_ours_and_a_gpt2(tiny, corpus_dir, tmp_path):  # noqa: F811
  folder, _ = tiny
  config = load_config("smoothquant")
  study.validate(config)
  config.update(models=f"default,{folder}", corpus=str(corpus_dir), seq_len=32,
                calibration_windows=4, eval_windows=4, alphas=(0.5,),
                activation_modes=("per_token", "per_tensor_static"))  # fmt: skip
  config.outlier.models = ""  # The outlier copy is tested above, on the test split.
  rows = study.run(config, tmp_path)
  for model in ("default", str(folder)):
    group = [r for r in rows if r["model"] == model]
    assert [(r["activations"], r["smoothing"]) for r in group] == [
      ("float", "none"),
      ("per_token", "naive"),
      ("per_token", "smoothed"),
      ("per_tensor_static", "naive"),
      ("per_tensor_static", "smoothed"),
    ]
    assert all(np.isfinite(r["loss"]) for r in group) and group[0]["Δloss"] == 0.0
  for name in ("w8a8.md", "w8a8.csv", "w8a8.jsonl", "w8a8_summary.md", "w8a8.png",
               "default/outliers.png", "default/outliers.md", "tiny_gpt2/channel_stats.safetensors"):  # fmt: skip
    assert (tmp_path / name).is_file(), name
  config.update(weights="per_row", alphas=(0.5, 2.0), smooth_sites=("mlp.post",))
  config.outlier.factor = 0.0
  with pytest.raises(ConfigError) as error:
    study.validate(config)
  assert len(error.value.problems) == 4
