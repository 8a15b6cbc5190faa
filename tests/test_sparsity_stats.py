"""Sparsity numbers for logging (jaxsae.sparse.sparsity_stats): nonzeros, dead slices, nonzero
fractions and dead neurons of a tiny transformer's parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.models import transformer as T
from jaxsae.sparse import projection as P
from jaxsae.sparse import sparsity_stats


def _params():
  """Random parameters with the real tree of a one-layer tiny transformer (no eager init)."""
  rng = np.random.default_rng(0)
  draw = lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * 0.02)  # noqa: E731
  return jax.tree.map(draw, T.param_shapes(T.Transformer(tiny_model_config(n_layers=1))))


def _flat(tree):
  return {P.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.slow
def test_nonzero_stats_count_entries_fractions_and_dead_neurons():
  params = _params()
  flat = _flat(params)
  fc_in = flat["blocks_0/mlp/fc_in/kernel"].at[:, 5].set(0.0)  # Neuron 5 has no inputs.
  out = flat["blocks_0/attn/out/kernel"].at[1, 3].set(0.0)  # Channel (1, 3) writes nothing.
  query = flat["blocks_0/attn/query/kernel"].at[:, 0, :2].set(0.0)  # Channels (0, 0), (0, 1).
  params["blocks_0"]["mlp"]["fc_in"]["kernel"] = fc_in
  params["blocks_0"]["attn"]["out"]["kernel"] = out
  params["blocks_0"]["attn"]["query"]["kernel"] = query
  stats = jax.jit(sparsity_stats.nonzero_stats)(params)
  assert int(stats["nonzeros/blocks_0/mlp/fc_in/kernel"]) == fc_in.size - 32
  assert int(stats["dead_slices/blocks_0/mlp/fc_in/kernel"]) == 1
  assert int(stats["dead_neurons/blocks_0/mlp"]) == 1
  assert int(stats["dead_neurons/blocks_0/attn_ov"]) == 1
  assert int(stats["dead_neurons/blocks_0/attn_qk"]) == 2
  assert int(stats["dead_neurons"]) == 4
  projected = [w for n, w in _flat(params).items() if P.matrix_kind(n, w.ndim)]
  total = sum(w.size for w in projected)
  expected = sum(int(jnp.count_nonzero(w)) for w in projected) / total
  assert float(stats["nonzero_fraction"]) == pytest.approx(expected)
  assert float(stats["nonzero_fraction/embedding"]) == 1.0
