"""Variant groups: named groups with their own width, settings and sweep lists, trained in one
pass; untied encoder init for the TopK paper's ablation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import ConfigError
from jaxsae.sae import registry, row_sources, synthetic, train_config
from jaxsae.sae import train as train_lib
from jaxsae.sae.config import SAEConfig


def variant_config():
  c = train_config.base_config("topk")
  c.sae.n_latents = 64
  c.sae.k = 4
  c.variants.topk_wide = dict(
    architecture="topk", n_latents=128, multi_topk=True, sweep=dict(k=(2, 4))
  )
  c.variants.relu_narrow = dict(
    architecture="relu", n_latents=32, sweep=dict(sparsity_coefficient=(0.01, 0.1))
  )
  c.variants.topk_plain = dict(architecture="topk", tied_init=False, k_aux=0)
  c.sweep.architecture = ("topk", "topk_wide", "relu_narrow", "topk_plain")
  c.train.batch_size = 128
  c.train.steps = 6
  c.train.log_every = 3
  c.optim.warmup_steps = 1
  c.data.normalization_samples = 1024
  c.data.b_dec_samples = 256
  return c


def test_variants_plan_their_own_widths_settings_and_sweeps():
  groups = {g.name: g for g in train_config.plan(variant_config(), d_in=16)}
  assert list(groups) == ["topk", "topk_wide", "relu_narrow", "topk_plain"]
  wide, relu, plain = groups["topk_wide"], groups["relu_narrow"], groups["topk_plain"]
  assert (wide.config.n_latents, wide.config.multi_topk, wide.config.k) == (128, True, 4)
  assert [m.k for m in wide.members] == [2, 4] and wide.labels == (
    "topk_wide[k=2]",
    "topk_wide[k=4]",
  )
  # relu takes its recipe's fields, then the variant's, then its own λ list.
  assert relu.config.architecture == "relu" and relu.config.n_latents == 32
  assert [m.sparsity_coefficient for m in relu.members] == [0.01, 0.1]
  assert (plain.config.tied_init, plain.config.k_aux) == (False, 0)
  assert groups["topk"].labels == ("topk",) and groups["topk"].config.n_latents == 64


def test_bad_variants_are_named_with_their_fix():
  c = variant_config()
  c.variants.oops = dict(architecture="topkk", n_latent=3, sweep=dict(kk=(1,)))
  c.variants.relu = dict(architecture="relu")
  c.sweep.architecture = ("topk", "missing")
  with pytest.raises(ConfigError) as info:
    train_config.validate(c, d_in=16)
  text = str(info.value)
  for fragment in (
    'did you mean "topk"',
    '"variants.oops.n_latent"; did you mean "n_latents"',
    "variants.oops.sweep.kk",
    "variants.relu: a variant may not be named like",
    "sweep.architecture='missing'",
  ):
    assert fragment in text


@pytest.mark.parametrize("tied", [True, False])
def test_tied_init_sets_the_encoder_to_the_decoder_transpose(tied):
  config = SAEConfig("topk", d_in=16, n_latents=64, k=4, tied_init=tied)
  params = nn.meta.unbox(registry.build(config).init(jax.random.key(0), jnp.zeros((1, 16))))
  w_enc, w_dec = np.asarray(params["params"]["W_enc"]), np.asarray(params["params"]["W_dec"])
  np.testing.assert_allclose(np.linalg.norm(w_enc, axis=0), 1.0, rtol=1e-5)
  if tied:
    np.testing.assert_array_equal(w_enc, w_dec.T)
  else:
    assert np.abs(np.sum(w_enc * w_dec.T, axis=0)).mean() < 0.5  # Independent directions.


@pytest.mark.parametrize(
  "architecture, decoder_init_norm, expected",
  [("relu", -1.0, 0.1), ("relu", 0.5, 0.5), ("topk", -1.0, 1.0), ("gated", -1.0, 1.0)],
)
def test_decoder_init_norm_is_small_only_where_the_decoder_is_free(
  architecture, decoder_init_norm, expected
):
  # ReLU's free (penalty) decoder starts at row norm 0.1 (April 2024); unit decoders at 1.
  config = SAEConfig(architecture, 16, 64, k=4, decoder_init_norm=decoder_init_norm)
  params = nn.meta.unbox(registry.build(config).init(jax.random.key(0), jnp.zeros((1, 16))))
  w_enc, w_dec = np.asarray(params["params"]["W_enc"]), np.asarray(params["params"]["W_dec"])
  np.testing.assert_allclose(np.linalg.norm(w_dec, axis=-1), expected, rtol=1e-5)
  np.testing.assert_allclose(w_enc, w_dec.T, rtol=1e-6)  # Tied: the encoder is as small.


@pytest.mark.slow
def test_variants_of_several_widths_train_in_one_pass(tmp_path):
  rows = synthetic.SyntheticFeatures(d=16, n_features=32, active=3, noise=0.05).generate(4096)
  result = train_lib.train(variant_config(), tmp_path, row_sources.ArraySource(rows))
  assert [g.name for g in result.groups] == ["topk", "topk_wide", "relu_narrow", "topk_plain"]
  assert result.member_params("topk_wide", 1)["W_dec"].shape == (128, 16)
  assert result.member_params("relu_narrow", 0)["W_dec"].shape == (32, 16)
  first = result.history[-1]
  assert np.isfinite([v for k, v in first.items() if k.endswith("/fvu")]).all()
