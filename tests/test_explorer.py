"""The in-memory feature explorer (jaxsae.interp.explorer) on the shipped model and SAE."""

import functools

import numpy as np
import pytest

from jaxsae.errors import JaxsaeError
from jaxsae.interp import explorer
from jaxsae.models import pretrained
from jaxsae.sae import evaluate, export
from jaxsae.text import model_corpus


@functools.cache
def _explorer():
  lm = pretrained.load("default")
  config, variables, meta = export.load("default")
  windows = model_corpus.corpus_windows(lm, n=8, seq_len=64, split="validation")
  return explorer.explore(lm, config, variables, meta["hook"], windows, batch_windows=3)


def _inputs_and_codes(ex):
  _, captured = ex.lm.run(ex.windows, capture=[ex.hook])
  x = np.asarray(captured[ex.hook]).reshape(-1, ex.config.d_in)
  return x, np.asarray(evaluate.encode_decode(ex.config)(ex.variables, x)[0])


@pytest.mark.slow
def test_codes_density_and_peaks_match_a_direct_encoding():
  ex = _explorer()
  x, z = _inputs_and_codes(ex)
  np.testing.assert_allclose(ex.activations, x, rtol=1e-5, atol=1e-5)  # Batched as 3 + 3 + 2.
  np.testing.assert_allclose(ex.density(), (z > 0).mean(0), atol=1e-7)
  np.testing.assert_allclose(ex.max_activation(), z.max(0), rtol=1e-5, atol=1e-6)
  rows = ex.summary(n=5, by="max_activation")
  assert [r["max_activation"] for r in rows] == sorted(
    [r["max_activation"] for r in rows], reverse=True
  )
  assert rows[0]["latent"] == int(np.argmax(z.max(0)))


@pytest.mark.slow
def test_a_card_shows_the_latents_top_contexts_and_logits():
  ex = _explorer()
  _, z = _inputs_and_codes(ex)
  latent = int(np.argmax(z.max(0)))
  card = ex.card(latent, n_top=5)
  values = [c.value for c in card.top_contexts]
  np.testing.assert_allclose(values, np.sort(z[:, latent])[::-1][:5], rtol=1e-5, atol=1e-6)
  T = ex.windows.shape[1]
  top = card.top_contexts[0]
  assert top.tokens[top.focus] == ex.windows[top.window, top.position]
  assert np.argmax(z[:, latent]) == top.window * T + top.position
  assert len(card.top_logits) == 10 and card.top_logits[0][1] >= card.top_logits[-1][1]
  html = ex.card_html(latent)
  assert f"Latent {latent}" in html and "Top activations" in html


def test_bad_input_is_named():
  ex = _explorer()
  with pytest.raises(JaxsaeError, match="not in"):
    ex.card(ex.config.n_latents)
  with pytest.raises(JaxsaeError, match="unknown sort key"):
    ex.summary(by="f1")
  with pytest.raises(JaxsaeError, match="no hook"):
    explorer.explore(ex.lm, ex.config, ex.variables, "blocks.7.resid_post", ex.windows)
  with pytest.raises(JaxsaeError, match="reads width"):
    explorer.explore(ex.lm, ex.config, ex.variables, "blocks.1.mlp.post", ex.windows)
