"""Steering with SAE latents (jaxsae.interp.latent_steering) on the shipped model and its
shipped SAE."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import JaxsaeError
from jaxsae.interp import browser, latent_steering
from jaxsae.models import pretrained
from jaxsae.sae import evaluate, export

PROMPTS = ["import os\n\n\ndef main(argv):\n    ", "class Parser:\n    def __init__(self, "]


@functools.cache
def _lm():
  return pretrained.load("default")


@functools.cache
def _sae():
  config, variables, meta = export.load("default")
  return config, variables, meta["hook"]


def _tokens():
  lm = _lm()
  rows = [lm.encode(p)[:32] for p in PROMPTS]
  return np.stack([np.pad(r, (0, 32 - len(r))) for r in rows])


def _activations(hook):
  return np.asarray(_lm().run(_tokens(), capture=[hook])[1][hook], np.float32)


def _peak(config, variables, hook) -> np.ndarray:
  """Largest activation of each latent over the prompts."""
  x = _activations(hook).reshape(-1, config.d_in)
  return np.asarray(evaluate.encode_decode(config)(variables, x)[0]).max(0)


def test_shipped_sae_reads_the_shipped_model():
  config, variables, hook = _sae()
  lm = _lm()
  assert hook in lm.hook_names() and config.d_in == lm.config.d_model
  assert variables["params"]["W_dec"].shape == (config.n_latents, config.d_in)


@pytest.mark.slow
def test_adding_a_latent_raises_its_top_logit_tokens():
  config, variables, hook = _sae()
  lm, tokens = _lm(), _tokens()
  effect = np.asarray(variables["params"]["W_dec"]) @ browser.unembedding(lm)
  latents = np.argsort(-effect.max(1))[:3]  # Latents with the sharpest direct token effects.
  strength = 4 * float(np.linalg.norm(_activations(hook), axis=-1).mean())
  for latent in latents:
    np.testing.assert_allclose(
      latent_steering.logit_effect(lm, config, variables, int(latent)),
      effect[latent],
      rtol=1e-5,
      atol=1e-5,
    )
    top = latent_steering.top_logit_tokens(lm, config, variables, int(latent), k=5)
    np.testing.assert_array_equal(top, np.argsort(-effect[latent], kind="stable")[:5])
    d_norm = float(np.linalg.norm(variables["params"]["W_dec"][latent]))
    edits = latent_steering.steering_edits(hook, config, variables, int(latent), strength / d_norm)
    before = latent_steering.token_probability(lm, tokens, top)
    after = latent_steering.token_probability(lm, tokens, top, edits)
    assert after > 2 * before, (latent, before, after)
    # Subtracting the direction lowers them.
    edits = latent_steering.steering_edits(hook, config, variables, int(latent), -strength / d_norm)
    assert latent_steering.token_probability(lm, tokens, top, edits) < before


def test_add_is_the_decoder_direction_at_every_position():
  config, variables, hook = _sae()
  x = jnp.asarray(_activations(hook))
  edit = latent_steering.latent_edit(config, variables, 7, 2.5, "add")
  expected = x + 2.5 * jnp.asarray(variables["params"]["W_dec"][7])
  np.testing.assert_allclose(np.asarray(edit(x)), np.asarray(expected), rtol=0, atol=1e-6)
  lm = _lm()
  _, captured = lm.run(_tokens(), capture=[hook], edits={hook: edit})
  np.testing.assert_allclose(np.asarray(captured[hook]), np.asarray(expected), atol=1e-5)


def test_clamp_sets_the_latent_and_keeps_the_rest():
  config, variables, hook = _sae()
  x = _activations(hook).reshape(-1, config.d_in)
  z = np.asarray(evaluate.encode_decode(config)(variables, x)[0])
  latent = int(np.argmax((z > 0).sum(0)))  # The latent that fires most often.
  d = np.asarray(variables["params"]["W_dec"][latent])
  for value in (0.0, 3.0 * z[:, latent].max()):
    edited = np.asarray(latent_steering.latent_edit(config, variables, latent, value, "clamp")(x))
    np.testing.assert_allclose(edited, x + (value - z[:, latent])[:, None] * d, atol=1e-5)
  # Clamping to the value the latent already has changes nothing.
  same = latent_steering.latent_edit(config, variables, latent, 0.0, "clamp")
  silent = z[:, latent] == 0
  np.testing.assert_allclose(np.asarray(same(x))[silent], x[silent], atol=1e-6)


def test_steered_generation_uses_the_latents_tokens():
  config, variables, hook = _sae()
  lm = _lm()
  latent = int(np.argmax(_peak(config, variables, hook)))
  top = set(latent_steering.top_logit_tokens(lm, config, variables, latent, k=5).tolist())
  scale = float(np.linalg.norm(_activations(hook), axis=-1).mean())
  d_norm = float(np.linalg.norm(variables["params"]["W_dec"][latent]))
  plain = lm.generate(PROMPTS[0], 40, temperature=0)
  steered = latent_steering.steer(
    lm,
    PROMPTS[0],
    hook,
    config,
    variables,
    latent,
    6 * scale / d_norm,
    temperature=0,
    max_new_tokens=40,
  )
  count = lambda text: sum(int(t) in top for t in lm.encode(text, separator=False))  # noqa: E731
  assert steered != plain
  assert count(steered) > count(plain)


def test_bad_steering_input_is_named():
  config, variables, hook = _sae()
  with pytest.raises(JaxsaeError, match="not a latent"):
    latent_steering.latent_edit(config, variables, config.n_latents, 1.0)
  with pytest.raises(JaxsaeError, match="unknown steering mode"):
    latent_steering.latent_edit(config, variables, 0, 1.0, "multiply")
  lm = _lm()
  with pytest.raises(JaxsaeError, match="unknown hook|hook"):
    lm.run(
      _tokens(),
      edits=latent_steering.steering_edits("blocks.9.resid_post", config, variables, 0, 1),
    )


def test_logit_effect_matches_the_browser():
  config, variables, _ = _sae()
  lm = _lm()
  weights = browser.decoder_logits(
    np.asarray(variables["params"]["W_dec"][:3]), browser.unembedding(lm), k=4
  )
  for i in range(3):
    np.testing.assert_array_equal(
      latent_steering.top_logit_tokens(lm, config, variables, i, k=4), weights.top_ids[i]
    )
