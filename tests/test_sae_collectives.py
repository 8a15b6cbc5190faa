"""Exact top-k across latent shards and the batch-wide k-th value, on 8 CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxsae import sharding
from jaxsae.sae import collectives
from jaxsae.sae.collectives import Axes


@pytest.mark.slow
def test_top_k_over_latent_shards_equals_the_unsharded_top_k():
  mesh = sharding.make_mesh(data=2, model=4)
  pre = jax.random.normal(jax.random.key(0), (6, 32))
  axes = Axes(batch=sharding.DATA, latents=sharding.MODEL)

  def per_device(pre):
    values, local = collectives.top_k_over_latents(pre, 5, axes)
    return values, collectives.scatter_latents(values, local, pre.shape[-1])

  values, dense = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=P(sharding.DATA, sharding.MODEL),
    out_specs=(P(sharding.DATA), P(sharding.DATA, sharding.MODEL)),
    check_vma=False,
  )(pre)
  ref_values, ref_idx = jax.lax.top_k(pre, 5)
  np.testing.assert_array_equal(values, ref_values)
  ref_dense = jnp.zeros_like(pre).at[jnp.arange(6)[:, None], ref_idx].set(ref_values)
  np.testing.assert_array_equal(dense, ref_dense)


def test_kth_largest_over_the_global_batch():
  mesh = sharding.make_mesh(data=4, model=2)
  acts = jax.random.uniform(jax.random.key(1), (16, 8))
  axes = Axes(batch=sharding.DATA, latents=sharding.MODEL)
  kth = jax.shard_map(
    lambda a: collectives.kth_largest_over_batch(a, 20, 24, axes)[None, None],
    mesh=mesh,
    in_specs=P(sharding.DATA, sharding.MODEL),
    out_specs=P(sharding.DATA, sharding.MODEL),  # One value per device: all must agree.
  )(acts)
  np.testing.assert_array_equal(kth, np.full((4, 2), np.sort(np.asarray(acts).ravel())[-20]))
