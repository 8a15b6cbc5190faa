"""Dictionaries trained on (input, target) pairs: transcoders and skip transcoders against their
formulas in numpy, every loss term and statistic measured against the target, and the SAE as the
case target = input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sae_helpers

from jaxsae.errors import ConfigError
from jaxsae.sae.base import Hyper
from jaxsae.sae.config import SAEConfig

D, D_OUT, N, BATCH = 8, 6, 32, 16
ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "relu")


def make(architecture, d_out=D_OUT, **overrides):
  """A transcoder module (an SAE for d_out=-1), perturbed parameters and a batch."""
  return sae_helpers.perturbed_dictionary(
    architecture, d_in=D, n_latents=N, batch=BATCH, d_out=d_out, transcode=d_out != -1, **overrides
  )


def target_of(x, d_out=D_OUT):
  """A target that depends on the input (as an MLP's output does on its input)."""
  m = jax.random.normal(jax.random.key(3), (x.shape[-1], d_out))
  return jnp.tanh(x @ m) + 0.3


def loss_of(sae, variables, x, target=None, dead=None):
  dead = jnp.zeros(N, bool) if dead is None else dead
  return sae.apply(variables, x, Hyper.of(sae.config), dead, target=target, method="loss")


@pytest.mark.slow
def test_an_sae_is_the_case_target_equals_input():
  for arch in ARCHITECTURES + ("gated",):
    sae, v, x = make(arch, d_out=-1)
    a, b = loss_of(sae, v, x), loss_of(sae, v, x, target=x)
    assert float(a.total) == float(b.total), arch
    np.testing.assert_array_equal(a.stats["fired"], b.stats["fired"])


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.slow
def test_transcoder_follows_its_formula(architecture, skip):
  sae, v, x = make(architecture, skip=skip, k_aux=0)
  y = target_of(x)
  p = {k: np.asarray(a, np.float64) for k, a in v["params"].items()}
  assert p["W_dec"].shape == (N, D_OUT) and p["b_dec"].shape == (D_OUT,)
  xn = np.asarray(x, np.float64)
  pre = xn @ p["W_enc"] + p["b_enc"]  # No b_dec subtraction: b_dec is the output's bias.
  enc = sae.apply(v, x, method="encode")
  np.testing.assert_allclose(enc.pre, pre, atol=1e-5)

  def output(enc):
    z = np.asarray(enc.latents, np.float64)
    return z @ p["W_dec"] + p["b_dec"] + (xn @ p["W_skip"] if skip else 0.0)

  np.testing.assert_allclose(sae.apply(v, x), output(enc), atol=1e-5)
  y_hat = output(sae.apply(v, x, Hyper.of(sae.config), True, method="encode"))  # BatchTopK's.
  out = loss_of(sae, v, x, y)
  yn = np.asarray(y, np.float64)
  recon = np.mean(np.sum((yn - y_hat) ** 2, -1)) / D_OUT
  np.testing.assert_allclose(out.terms["reconstruction"], recon, rtol=1e-5)
  fvu = np.sum((yn - y_hat) ** 2) / np.sum((yn - yn.mean(0)) ** 2)
  np.testing.assert_allclose(out.stats["fvu"], fvu, rtol=1e-5)


def test_a_transcoders_encoder_does_not_see_b_dec():
  sae, v, x = make("topk", topk_path="sparse")
  shifted = {**v, "params": {**v["params"], "b_dec": v["params"]["b_dec"] + 5.0}}
  np.testing.assert_array_equal(
    sae.apply(v, x, method="encode").pre, sae.apply(shifted, x, method="encode").pre
  )


@pytest.mark.parametrize("topk_path", ["sparse", "dense"])
@pytest.mark.slow
def test_topk_paths_agree_on_a_skip_transcoder_with_aux_k_and_matryoshka(topk_path):
  """Both TopK paths, every term against the target, gradients included."""
  kw = dict(skip=True, k_aux=8, matryoshka=(8,), multi_topk=True)
  sae, v, x = make("topk", topk_path=topk_path, **kw)
  dense, _, _ = make("topk", topk_path="dense", **kw)
  y, dead = target_of(x), jnp.arange(N) % 3 == 0

  def total(module, params):
    return loss_of(module, {**v, "params": params}, x, y, dead).total

  np.testing.assert_allclose(total(sae, v["params"]), total(dense, v["params"]), rtol=1e-5)
  grads = jax.grad(lambda p: total(sae, p))(v["params"])
  reference = jax.grad(lambda p: total(dense, p))(v["params"])
  for name in reference:
    np.testing.assert_allclose(grads[name], reference[name], atol=1e-5, err_msg=name)
  assert float(jnp.abs(grads["W_skip"]).max()) > 0


def test_aux_k_fits_the_targets_residual():
  sae, v, x = make("topk", d_out=D, k_aux=8, topk_path="dense")  # MLP in → out: same width.
  y = target_of(x, D)
  dead = jnp.arange(N) % 2 == 0
  out = loss_of(sae, v, x, y, dead)
  wrong = loss_of(sae, v, x, None, dead)  # The SAE residual instead: another number.
  assert float(out.stats["aux_k_loss"]) != float(wrong.stats["aux_k_loss"])
  p = {k: np.asarray(a, np.float64) for k, a in v["params"].items()}
  enc = sae.apply(v, x, method="encode")
  e = np.asarray(y, np.float64) - np.asarray(sae.apply(v, enc.latents, method="decode"))
  pre = np.where(np.asarray(dead), np.asarray(enc.pre, np.float64), -np.inf)
  z = np.zeros_like(pre)
  idx = np.argsort(-pre, -1)[:, :8]
  np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
  e_hat = z @ p["W_dec"]
  expected = np.sum((e - e_hat) ** 2) / np.sum((e - e.mean(0)) ** 2)
  np.testing.assert_allclose(out.stats["aux_k_loss"], expected, rtol=1e-4)


def test_skip_decoding_needs_the_input_and_starts_at_zero():
  sae, v, x = make("relu", skip=True)
  init = nn.meta.unbox(sae.init(jax.random.key(0), x))
  assert init["params"]["W_skip"].shape == (D, D_OUT)
  np.testing.assert_array_equal(init["params"]["W_skip"], 0.0)
  z = sae.apply(v, x, method="encode").latents
  with pytest.raises(ValueError, match="skip connection"):
    sae.apply(v, z, method="decode")


def test_a_skipless_saes_parameters_are_unchanged_by_the_new_fields():
  """Same init keys and shapes: an SAE built today equals one built before targets existed."""
  sae, _, x = make("topk", d_out=-1)
  skip, _, _ = make("topk", d_out=-1, skip=True)
  a = nn.meta.unbox(sae.init(jax.random.key(1), x))["params"]
  b = nn.meta.unbox(skip.init(jax.random.key(1), x))["params"]
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_width_change_needs_transcode():
  with pytest.raises(ConfigError, match="transcode"):
    SAEConfig(architecture="topk", d_in=D, n_latents=N, d_out=D_OUT)
  with pytest.raises(ConfigError, match="d_out"):
    SAEConfig(architecture="topk", d_in=D, n_latents=N, d_out=0, transcode=True)
