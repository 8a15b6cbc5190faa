"""Downstream metrics: ΔCE, CE recovered against zero and mean ablation, KL score."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from jaxsae.evals import downstream
from jaxsae.models import pretrained

HOOK = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def lm_and_windows():
  lm = pretrained.load("default")
  text = "import os\n\n\nclass Path:\n    def join(self, *parts):\n        return os.sep\n" * 4
  return lm, lm.encode(text)[: 3 * 33].reshape(3, 33)


@pytest.mark.slow
def test_exact_reconstruction_has_zero_kl_and_full_scores(lm_and_windows):
  lm, ids = lm_and_windows
  out = downstream.splice_losses(lm, ids, HOOK, lambda v, x: x, None)
  assert out["kl"] == pytest.approx(0.0, abs=1e-6)
  assert out["kl_score"] == pytest.approx(1.0, abs=1e-6)
  assert out["ce_recovered_mean"] == pytest.approx(1.0, abs=1e-6)
  assert out["kl_zero"] > out["kl_mean"] > 0  # Mean ablation keeps more than zero ablation.
  assert out["ce_zero"] > out["ce_mean"] > out["ce_clean"]


@pytest.mark.slow
def test_splicing_the_mean_is_mean_ablation(lm_and_windows):
  lm, ids = lm_and_windows
  reference = downstream.reference_losses(lm, ids, HOOK)
  mean = jnp.asarray(downstream.mean_activation(lm, ids, HOOK))
  out = downstream.splice_losses(
    lm, ids, HOOK, lambda m, x: jnp.broadcast_to(m, x.shape), mean, reference
  )
  assert out["ce_spliced"] == pytest.approx(reference["ce_mean"], rel=1e-5)
  assert out["kl"] == pytest.approx(reference["kl_mean"], rel=1e-4)
  assert out["ce_recovered_mean"] == pytest.approx(0.0, abs=1e-5)
  assert out["kl_score"] == pytest.approx(1 - reference["kl_mean"] / reference["kl_zero"], 1e-4)


def test_kl_matches_a_hand_computation(lm_and_windows):
  lm, ids = lm_and_windows
  _, kl = downstream.edited_losses(lm, ids, HOOK, "zero")
  clean, _ = lm.run(ids[:, :-1])

  def zero_except_separator(x):
    return jnp.where((ids[:, :-1] == lm.tokenizer.separator_id)[..., None], x, 0.0)

  zeroed, _ = lm.run(ids[:, :-1], edits={HOOK: zero_except_separator})
  logp = log_softmax(np.asarray(clean, np.float64), axis=-1)
  logq = log_softmax(np.asarray(zeroed, np.float64), axis=-1)
  expected = np.mean(np.sum(np.exp(logp) * (logp - logq), -1))
  assert kl == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_skip_first_leaves_the_first_positions_unedited(lm_and_windows):
  lm, ids = lm_and_windows
  ce, _ = downstream.edited_losses(lm, ids, HOOK, "zero", skip_first=4)
  inputs = ids[:, :-1]
  keep = (inputs == lm.tokenizer.separator_id) | (np.arange(inputs.shape[1]) < 4)
  zeroed, _ = lm.run(inputs, edits={HOOK: lambda x: jnp.where(keep[..., None], x, 0.0)})
  logq = log_softmax(np.asarray(zeroed, np.float64), axis=-1)
  expected = -np.mean(np.take_along_axis(logq, ids[:, 1:, None], -1))
  assert ce == pytest.approx(expected, rel=1e-5)
  assert ce < downstream.edited_losses(lm, ids, HOOK, "zero")[0]  # Fewer positions zeroed.
  mean = downstream.mean_activation(lm, ids, HOOK, skip_first=4)
  _, captured = lm.run(inputs, capture=[HOOK])
  np.testing.assert_allclose(mean, np.asarray(captured[HOOK])[~keep].mean(0), rtol=1e-5, atol=1e-6)


def test_unknown_mode_is_named(lm_and_windows):
  lm, ids = lm_and_windows
  with pytest.raises(ValueError, match="mode='half'"):
    downstream.edited_losses(lm, ids, HOOK, "half")


@pytest.mark.slow
def test_latent_ablation_sparsity_matches_a_hand_ablation(lm_and_windows):
  import flax.linen as nn
  import jax

  from jaxsae.evals import latent_ablation, metrics
  from jaxsae.sae import evaluate, registry
  from jaxsae.sae.config import SAEConfig

  lm, ids = lm_and_windows
  tokens = ids[:, :-1]
  config = SAEConfig("topk", d_in=lm.config.d_model, n_latents=256, k=8)
  x = jnp.zeros((1, config.d_in))
  variables = nn.meta.unbox(registry.build(config).init(jax.random.key(0), x))
  out = latent_ablation.ablation_sparsity_of_latents(
    lm, tokens, HOOK, config, variables, scale=0.5, max_latents=3, lanes=2
  )
  assert len(out["latents"]) == 3
  _, captured = lm.run(tokens, capture=[HOOK])
  z = evaluate.encode_decode(config, 0.5)(variables, captured[HOOK].reshape(-1, config.d_in))[0]
  i = int(out["latents"][1])
  w = variables["params"]["W_dec"][i] / 0.5  # Raw units: x̂ = (z W_dec + b_dec) / scale.
  z_i = z[:, i].reshape(tokens.shape)
  clean, _ = lm.run(tokens)
  ablated, _ = lm.run(tokens, edits={HOOK: lambda a: a - z_i[..., None] * w})
  expected = metrics.ablation_sparsity(np.asarray(ablated - clean))[0]
  assert out["per_latent_effective"][1] == pytest.approx(expected, rel=1e-3)
  assert out["effective"] == pytest.approx(np.mean(out["per_latent_effective"]))
  assert out["entries"] == clean.size
  assert out["fraction"] == pytest.approx(out["effective"] / clean.size)
