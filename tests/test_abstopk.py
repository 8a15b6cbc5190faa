"""AbsTopK activation sparsity (Gao et al. 2025, "Weight-sparse transformers have interpretable
circuits"): the function, its gradient, the eight sparsified hook sites and the config field."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models import pretrained
from jaxsae.models import transformer as T
from jaxsae.models.config import TransformerConfig


def _numpy_abs_topk(x, k):
  order = np.argsort(-np.abs(x), axis=-1, kind="stable")[..., :k]
  keep = np.zeros(x.shape, bool)
  np.put_along_axis(keep, order, True, axis=-1)
  return np.where(keep, x, 0), keep


def test_abs_topk_keeps_exactly_the_k_largest_magnitudes_negatives_included():
  x = np.asarray(jax.random.normal(jax.random.key(0), (3, 5, 37)))
  out = np.asarray(T.abs_topk(jnp.asarray(x), 9))
  expected, keep = _numpy_abs_topk(x, 9)
  np.testing.assert_array_equal(out, expected)
  assert (np.count_nonzero(out, axis=-1) == 9).all()
  assert (out[keep] < 0).any()  # Large negative entries survive.


def test_abs_topk_edge_cases_ties_and_dtype():
  x = jnp.array([[1.0, -1.0, 1.0, 1.0, 0.5]])
  np.testing.assert_array_equal(T.abs_topk(x, 2), [[1.0, -1.0, 0.0, 0.0, 0.0]])  # Lower index wins.
  np.testing.assert_array_equal(T.abs_topk(x, 5), x)
  np.testing.assert_array_equal(T.abs_topk(x, 0), jnp.zeros_like(x))
  with pytest.raises(JaxsaeError, match="k=6"):
    T.abs_topk(x, 6)
  x_bf16 = jax.random.normal(jax.random.key(1), (4, 64)).astype(jnp.bfloat16)
  out = T.abs_topk(x_bf16, 16)
  assert out.dtype == jnp.bfloat16
  expected, _ = _numpy_abs_topk(np.asarray(x_bf16.astype(jnp.float32)), 16)
  np.testing.assert_array_equal(np.asarray(out.astype(jnp.float32)), expected)


def test_abs_topk_gradient_is_the_mask():
  x = jax.random.normal(jax.random.key(2), (6, 40))
  grad = jax.grad(lambda v: (T.abs_topk(v, 10) * 3.0).sum())(x)
  _, keep = _numpy_abs_topk(np.asarray(x), 10)
  np.testing.assert_array_equal(np.asarray(grad), np.where(keep, 3.0, 0.0))


def _logits(cfg, params, tokens, **kwargs):
  return T.run(T.Transformer(cfg), params, tokens, **kwargs)


@pytest.mark.slow
def test_fraction_zero_leaves_the_model_unchanged():
  cfg = tiny_model_config()
  assert cfg.activation_topk_fraction == 0.0
  params = T.init_params(T.Transformer(cfg), jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)
  dense, _ = _logits(cfg, params, tokens)
  explicit, _ = _logits(dataclasses.replace(cfg, activation_topk_fraction=0.0), params, tokens)
  np.testing.assert_array_equal(explicit, dense)
  # Fraction 1 keeps everything, so it too must be bit-identical; 0 adds no top_k at all.
  full, _ = _logits(dataclasses.replace(cfg, activation_topk_fraction=1.0), params, tokens)
  np.testing.assert_array_equal(full, dense)
  jaxpr = str(jax.make_jaxpr(lambda p: T.Transformer(cfg).apply({"params": p}, tokens))(params))
  assert "top_k" not in jaxpr


@pytest.mark.parametrize("variant", ["gpt2", "circuits"])
@pytest.mark.slow
def test_every_sparsified_hook_has_at_most_k_nonzeros_per_token(variant):
  extra = {} if variant == "gpt2" else dict(norm="rmsnorm", attention_sink=True, use_bias=False)
  cfg = tiny_model_config(activation_topk_fraction=0.25, **extra)
  params = T.init_params(T.Transformer(cfg), jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)
  names = [f"blocks.{layer}.{site}" for layer in range(cfg.n_layers) for site in T.SPARSE_SITES]
  assert len(T.SPARSE_SITES) == 8
  logits, captured = _logits(cfg, params, tokens, capture=names + ["blocks.0.mlp.pre"])
  for name in names:
    value = np.asarray(captured[name])
    per_token = value.reshape(*value.shape[:2], -1)
    k = round(0.25 * per_token.shape[-1])
    assert np.count_nonzero(per_token, axis=-1).max() <= k, name
    assert np.count_nonzero(per_token, axis=-1).max() >= 1, name
  # The pre-activation is not a sparsified site, and sparsity changes the output.
  assert np.count_nonzero(captured["blocks.0.mlp.pre"], axis=-1).min() > round(0.25 * cfg.d_mlp)
  dense, _ = _logits(dataclasses.replace(cfg, activation_topk_fraction=0.0), params, tokens)
  assert np.isfinite(logits).all() and not np.allclose(logits, dense)


def test_an_edit_at_a_sparsified_site_sees_the_sparse_value():
  cfg = tiny_model_config(activation_topk_fraction=0.25)
  params = T.init_params(T.Transformer(cfg), jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (1, 8), 0, cfg.vocab_size)
  seen = {}

  def record(x):
    seen["z"] = x
    return x

  T.run(T.Transformer(cfg), params, tokens, edits={"blocks.1.attn.z": record})
  z = np.asarray(seen["z"]).reshape(1, 8, -1)
  assert np.count_nonzero(z, axis=-1).max() <= cfg.topk_count(cfg.n_heads * cfg.d_head)


@pytest.mark.slow
def test_the_shipped_model_loads_without_the_field_and_its_logits_are_unchanged(tmp_path):
  doc = pretrained.resolve("default") / pretrained.CONFIG_FILE
  assert "activation_topk_fraction" not in doc.read_text()  # An older config.json.
  lm = pretrained.load("default")
  assert lm.config.activation_topk_fraction == 0.0
  tokens = lm.encode("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
  logits, _ = lm.run(tokens)
  # Still the trained model: it predicts most next bytes of plain code.
  assert np.mean(np.argmax(logits[0, :-1], -1) == tokens[1:]) > 0.5
  # Keeping every entry (fraction 1) is the identity: the same logits through the AbsTopK path.
  dense = dataclasses.replace(lm.config, activation_topk_fraction=1.0)
  full, _ = T.run(T.Transformer(dense), lm.params, jnp.asarray(tokens)[None])
  np.testing.assert_allclose(np.asarray(full), np.asarray(logits), rtol=1e-5, atol=2e-5)
  # A sparse config round-trips through config.json.
  sparse = dataclasses.replace(lm.config, activation_topk_fraction=0.25)
  path = pretrained.save(tmp_path / "sparse", sparse, lm.params, lm.tokenizer)
  assert pretrained.load(path).config.activation_topk_fraction == 0.25


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.25", True, float("nan")])
def test_a_bad_fraction_raises_a_clear_error(bad):
  with pytest.raises(
    ConfigError, match=r"activation_topk_fraction=.* must be a number in \[0, 1\]"
  ):
    TransformerConfig(vocab_size=257, activation_topk_fraction=bad)


def test_a_fraction_that_keeps_nothing_raises():
  with pytest.raises(ConfigError, match="keeps round.* = 0 entries.*use at least 1/32"):
    tiny_model_config(activation_topk_fraction=0.01)
  assert tiny_model_config(activation_topk_fraction=1 / 32).topk_count(32) == 1
