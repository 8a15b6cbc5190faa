"""QK and OV circuits (jaxsae.models.qk_ov_circuits) against the model's own forward pass and
the paper's formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.errors import JaxsaeError
from jaxsae.models import qk_ov_circuits
from jaxsae.models import transformer as T

CFG = tiny_model_config(
  norm="rmsnorm", positions="none", use_bias=False, n_layers=3, n_heads=2, tied_embeddings=False
)


@pytest.fixture(scope="module")
def model_params():
  model = T.Transformer(CFG)
  params = T.init_params(model, jax.random.key(0))
  keys = iter(jax.random.split(jax.random.key(1), 64))
  # Random norm gains, so folding them in is actually tested.
  return model, jax.tree_util.tree_map_with_path(
    lambda path, p: 0.5 + jax.random.uniform(next(keys), p.shape) if path[-1].key == "scale" else p,
    params,
  )


@pytest.mark.slow
def test_qk_and_ov_matrices_reproduce_the_forward_pass(model_params):
  model, params = model_params
  tokens = jax.random.randint(jax.random.key(2), (1, 10), 0, CFG.vocab_size)
  _, cap = T.run(
    model,
    params,
    tokens,
    capture=[
      "blocks.1.attn.in",
      "blocks.1.attn.scores",
      "blocks.1.attn.pattern",
      "blocks.1.attn.out",
    ],
  )
  gain = params["blocks_1"]["attn_norm"]["scale"]
  normed = cap["blocks.1.attn.in"][0] / gain  # The norm's output before its gain.
  scores = jnp.einsum(
    "qd,hde,se->hqs", normed, qk_ov_circuits.qk_matrices(params, 1), normed
  ) / math.sqrt(CFG.d_head)
  causal = np.tril(np.ones((10, 10), bool))
  np.testing.assert_allclose(
    np.where(causal, scores, 0),
    np.where(causal, cap["blocks.1.attn.scores"][0], 0),
    rtol=1e-4,
    atol=1e-5,
  )
  ov = qk_ov_circuits.ov_matrices(params, 1)
  out = jnp.einsum("hqs,sd,hde->qe", cap["blocks.1.attn.pattern"][0], normed, ov)
  np.testing.assert_allclose(out, cap["blocks.1.attn.out"][0], rtol=1e-4, atol=1e-6)


def test_layer0_qk_circuit_is_the_token_to_token_score(model_params):
  model, params = model_params
  tokens = jnp.array([[3, 17, 99, 3, 250]])
  _, cap = T.run(model, params, tokens, capture=["blocks.0.attn.scores"])
  qk = qk_ov_circuits.qk_circuit(params, CFG, 0, tokens=tokens[0])  # (H, 5, 5)
  e = params["embed"]["embedding"][tokens[0]]
  rms = jnp.sqrt(jnp.mean(e * e, axis=-1) + CFG.norm_eps)
  expected = qk / (rms[:, None] * rms[None, :]) / math.sqrt(CFG.d_head)
  causal = np.tril(np.ones((5, 5), bool))
  np.testing.assert_allclose(
    np.where(causal, expected, 0),
    np.where(causal, cap["blocks.0.attn.scores"][0], 0),
    rtol=1e-4,
    atol=1e-6,
  )


def test_circuit_shapes_and_the_direct_path(model_params):
  _, params = model_params
  assert qk_ov_circuits.ov_circuit(params, CFG, 2).shape == (
    CFG.n_heads,
    CFG.vocab_size,
    CFG.vocab_size,
  )
  sub = jnp.array([1, 5, 9])
  full = qk_ov_circuits.direct_path(params, CFG)
  np.testing.assert_allclose(
    qk_ov_circuits.direct_path(params, CFG, tokens=sub), full[sub][:, sub], rtol=1e-5
  )
  e, u = (
    params["embed"]["embedding"],
    params["unembed"]["kernel"] * params["final_norm"]["scale"][:, None],
  )
  np.testing.assert_allclose(full, e @ u, rtol=1e-5)


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_composition_scores_follow_the_papers_column_convention(model_params, kind):
  _, params = model_params
  scores = np.asarray(qk_ov_circuits.composition_scores(params, CFG, kind))
  assert scores.shape == (3, 2, 3, 2)
  assert np.all(
    scores[np.tril_indices(3)[0], :, np.tril_indices(3)[1], :] == 0
  )  # Only later heads.
  assert np.all((scores >= 0) & (scores <= 1))
  # Paper (column vectors): W_QK = W_Q^T W_K, W_OV = W_O W_V with W_Q: (d_head, d).
  w0, w2 = qk_ov_circuits.head_weights(params, 0), qk_ov_circuits.head_weights(params, 2)
  h1, h2 = 1, 0
  ov1 = np.asarray(w0["W_O"][h1]).T @ np.asarray(w0["W_V"][h1]).T
  qk2 = np.asarray(w2["W_Q"][h2]) @ np.asarray(w2["W_K"][h2]).T
  ov2 = np.asarray(w2["W_O"][h2]).T @ np.asarray(w2["W_V"][h2]).T
  m, a = {"q": (qk2.T @ ov1, qk2), "k": (qk2 @ ov1, qk2), "v": (ov2 @ ov1, ov2)}[kind]
  expected = np.linalg.norm(m) / (np.linalg.norm(a) * np.linalg.norm(ov1))
  np.testing.assert_allclose(scores[0, h1, 2, h2], expected, rtol=1e-4)


def test_bad_requests_name_the_fix(model_params):
  _, params = model_params
  with pytest.raises(JaxsaeError, match='one of "q", "k", "v"'):
    qk_ov_circuits.composition_scores(params, CFG, "o")
  big = {"embed": {"embedding": jnp.zeros((9000, 4))}}
  with pytest.raises(JaxsaeError, match="pass tokens="):
    qk_ov_circuits._rows(big["embed"]["embedding"], None)
