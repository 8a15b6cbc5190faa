"""Meshes, logical-axis placement and global batches on 8 forced CPU devices."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import tiny_model_config
from jaxsae import sharding
from jaxsae.errors import JaxsaeError
from jaxsae.models import transformer as T


def test_meshes_use_all_devices_or_the_first_few():
  assert dict(sharding.make_mesh().shape) == {"data": 8, "model": 1}
  assert dict(sharding.make_mesh(-1, 4).shape) == {"data": 2, "model": 4}
  assert sharding.make_mesh(2, 1).devices.size == 2
  with pytest.raises(JaxsaeError, match="does not divide the 8 devices"):
    sharding.make_mesh(-1, 3)
  with pytest.raises(JaxsaeError, match="needs 16 devices"):
    sharding.make_mesh(8, 2)


def test_parameters_follow_logical_axes_and_indivisible_dims_replicate():
  model = T.Transformer(tiny_model_config(d_mlp=64, n_heads=4, d_head=8))
  shardings = sharding.logical_shardings(T.abstract_params(model), sharding.make_mesh(-1, 2))
  assert shardings["blocks_0"]["mlp"]["fc_in"]["kernel"].spec == P(None, "model")
  assert shardings["blocks_0"]["attn"]["query"]["kernel"].spec == P(None, "model", None)
  assert shardings["embed"]["embedding"].spec == P(None, None)  # vocab 257 is odd.
  assert shardings["final_norm"]["scale"].spec == P(None)


def test_global_batch_is_split_over_the_data_axis():
  mesh = sharding.make_mesh(4, 2)
  batch = sharding.global_batch({"tokens": np.arange(8 * 3).reshape(8, 3)}, mesh)
  assert batch["tokens"].sharding.spec == P("data")
  assert {s.data.shape for s in batch["tokens"].addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(jax.device_get(batch["tokens"]), np.arange(24).reshape(8, 3))


def test_divisibility_message_suggests_a_batch():
  assert sharding.divisibility_problem(16, -1, 8, 1) is None
  message = sharding.divisibility_problem(20, -1, 8, 1)
  assert "not divisible by the data axis (8 devices)" in message and "such as 16" in message
  assert sharding.divisibility_problem(6, -1, 8, 2) is not None
