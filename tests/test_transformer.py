"""The transformer: causality, options, shapes, dtypes and init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models import transformer as T
from jaxsae.models.config import TransformerConfig

VARIANTS = {
  "gpt2": {},
  "circuits": dict(
    norm="rmsnorm", attention_sink=True, bigram_table=True, tied_embeddings=False, use_bias=False
  ),
  "no_positions_relu": dict(positions="none", activation="relu"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.slow
def test_changing_a_later_token_never_changes_earlier_logits(variant):
  cfg = tiny_model_config(**VARIANTS[variant])
  model = T.Transformer(cfg)
  params = T.init_params(model, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, cfg.vocab_size)
  changed = tokens.at[:, 15].set((tokens[:, 15] + 7) % cfg.vocab_size)
  apply = jax.jit(model.apply)  # Op by op, the forward and its gradient take seconds.
  a, b = apply({"params": params}, tokens), apply({"params": params}, changed)
  np.testing.assert_array_equal(a[:, :15], b[:, :15])
  assert not np.allclose(a[:, 15:], b[:, 15:])
  # And by gradients: logits at t do not depend on the embedding at any s > t.
  embed = params["embed"]["embedding"][tokens[:1]]

  def logit_at_10(x):
    edits = {"embed.tok": lambda _: x}
    return T.run(model, params, tokens[:1], edits=edits)[0][0, 10].sum()

  grad = jax.jit(jax.grad(logit_at_10))(embed)
  assert not np.any(grad[0, 11:]) and np.any(grad[0, :11])


def test_variant_parameters_exist_with_logical_axes():
  cfg = tiny_model_config(**VARIANTS["circuits"])
  abstract = T.abstract_params(T.Transformer(cfg))
  assert abstract["bigram"].names == (None, "vocab")
  assert abstract["blocks_0"]["attn"]["sink"].names == ("heads",)
  assert abstract["unembed"]["kernel"].names == ("embed", "vocab")
  assert "bias" not in abstract["blocks_0"]["attn"]["query"]
  assert "bias" not in abstract["final_norm"]  # RMSNorm has a gain only.
  assert abstract["blocks_1"]["mlp"]["fc_in"]["kernel"].names == ("embed", "mlp")


@pytest.mark.slow
def test_bigram_table_adds_its_row_to_the_logits():
  cfg = tiny_model_config(bigram_table=True)
  model = T.Transformer(cfg)
  params = T.init_params(model, jax.random.key(0))
  tokens = jnp.array([[5, 9, 200]])
  table = params["bigram"]
  assert 0 <= table.min() and table.max() < 0.02
  without = jax.tree.map(lambda x: x, params)
  without["bigram"] = jnp.zeros_like(table)
  diff = model.apply({"params": params}, tokens) - model.apply({"params": without}, tokens)
  np.testing.assert_allclose(diff[0], table[tokens[0]], atol=1e-6)


def test_sink_gives_attention_somewhere_to_rest():
  cfg = tiny_model_config(attention_sink=True)
  model = T.Transformer(cfg)
  params = T.init_params(model, jax.random.key(0))
  params["blocks_0"]["attn"]["sink"] = jnp.full((cfg.n_heads,), 50.0)
  _, cap = T.run(
    model,
    params,
    jnp.zeros((1, 8), jnp.int32),
    capture=["blocks.0.attn.pattern", "blocks.0.attn.z"],
  )
  assert cap["blocks.0.attn.pattern"].sum(-1).max() < 1e-6  # All mass on the sink ...
  assert np.abs(cap["blocks.0.attn.z"]).max() < 1e-6  # ... whose value is zero.


@pytest.mark.slow
def test_init_scales_output_projections():
  cfg = tiny_model_config(n_layers=8, d_model=64, d_mlp=256, n_heads=4)
  params = T.init_params(T.Transformer(cfg), jax.random.key(0))
  assert abs(float(params["blocks_0"]["mlp"]["fc_in"]["kernel"].std()) - 0.02) < 0.002
  assert abs(float(params["blocks_0"]["mlp"]["fc_out"]["kernel"].std()) - 0.02 / 4) < 0.0005


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_residual():
  cfg = tiny_model_config(dtype="bfloat16")
  model = T.Transformer(cfg)
  params = T.init_params(model, jax.random.key(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits, cap = T.run(
    model, params, jnp.ones((1, 8), jnp.int32), capture=["blocks.0.resid_post", "blocks.0.mlp.post"]
  )
  assert logits.dtype == jnp.float32 and cap["blocks.0.resid_post"].dtype == jnp.float32
  assert cap["blocks.0.mlp.post"].dtype == jnp.bfloat16
  f32 = T.Transformer(tiny_model_config()).apply({"params": params}, jnp.ones((1, 8), jnp.int32))
  np.testing.assert_allclose(logits, f32, atol=0.05)


def test_bad_configs_and_inputs_name_the_fix():
  with pytest.raises(ConfigError, match="model.norm=.batchnorm. is not one of"):
    tiny_model_config(norm="batchnorm")
  with pytest.raises(ConfigError, match='did you mean "model.d_model"'):
    TransformerConfig.from_dict(dict(vocab_size=10, d_modle=8))
  model = T.Transformer(tiny_model_config(max_len=8))
  params = T.init_params(model, jax.random.key(0))
  with pytest.raises(JaxsaeError, match="exceeds the model's max_len=8"):
    model.apply({"params": params}, jnp.zeros((1, 9), jnp.int32))
