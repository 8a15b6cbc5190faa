"""Model parallelism of the transformer: with mesh.model = 2, 4 or 8 on 8 CPU devices the
parameters are split over heads, KV heads (where they divide), MLP neurons and the vocabulary,
and the forward equals the one-device forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae import sharding
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.text.tokenizer import ByteTokenizer

pytestmark = pytest.mark.slow  # Trains models in its fixtures: the full tier only.

# A Gemma-3-like block: GQA (8 query heads over 2 KV heads), gated MLP, post-norms, QK-norm,
# local/global layers.
CFG = tiny_model_config(
  vocab_size=264,
  n_heads=8,
  n_kv_heads=2,
  d_head=8,
  d_mlp=64,
  norm="rmsnorm",
  norm_scale_offset=1.0,
  use_bias=False,
  positions="rotary",
  rope_local_theta=100.0,
  gated_mlp=True,
  post_norms=True,
  qk_norm=True,
  embed_scale=True,
  sliding_window=4,
  layer_types=("sliding", "full"),
)


@pytest.fixture(scope="module")
def lm():
  params = T.init_params(T.Transformer(CFG), jax.random.key(0))
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)
  return LanguageModel(CFG, params, ByteTokenizer())


@pytest.mark.parametrize("model_axis", [2, 4, 8])
def test_model_parallel_forward_equals_one_device(lm, model_axis):
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 257, (8 // model_axis * 2, 12)))
  want = jax.jit(lambda p, t: T.run(lm.module, p, t)[0])(
    jax.device_put(lm.params, jax.devices()[0]), tokens
  )

  mesh = sharding.make_mesh(-1, model_axis)
  parallel = lm.on_mesh(mesh)
  query = parallel.params["blocks_0"]["attn"]["query"]["kernel"]
  key = parallel.params["blocks_0"]["attn"]["key"]["kernel"]
  gate = parallel.params["blocks_0"]["mlp"]["fc_gate"]["kernel"]
  assert query.sharding.spec[1] == sharding.MODEL and gate.sharding.spec[1] == sharding.MODEL
  # Two KV heads split over a model axis of 2; replicated over 4 or 8.
  assert (key.sharding.spec[1] == sharding.MODEL) == (model_axis == 2)
  assert query.addressable_shards[0].data.shape[1] == 8 // model_axis

  tokens = jax.device_put(tokens, sharding.batch_sharding(mesh))
  forward = jax.jit(lambda p, t: T.run(parallel.module, p, t)[0])
  hlo = forward.lower(parallel.params, tokens).compile().as_text()
  assert "all-reduce" in hlo or "reduce-scatter" in hlo  # Partial sums over the model axis.
  np.testing.assert_allclose(
    np.asarray(forward(parallel.params, tokens)), np.asarray(want), atol=2e-5
  )
