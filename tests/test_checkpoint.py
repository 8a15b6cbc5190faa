"""Orbax checkpoints: state, data position and metadata, restored across device counts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsae import sharding
from jaxsae.checkpoint import Checkpointer
from jaxsae.errors import CheckpointError
from jaxsae.text import pipeline
from jaxsae.train_state import TrainState


def _state(mesh):
  params = {"w": jnp.arange(64.0).reshape(8, 8), "b": jnp.ones(8)}
  state = TrainState.create(params, optax.adam(1e-3))
  specs = jax.tree.map(lambda _: sharding.replicated(mesh), state)
  specs = specs.replace(
    params={
      "w": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")),
      "b": sharding.replicated(mesh),
    }
  )
  return jax.device_put(state, specs), specs


@pytest.mark.slow
def test_round_trip_with_data_position_onto_fewer_devices(tmp_path):
  windows = pipeline.PackedWindows(np.arange(1000) % 257, 8)
  it = pipeline.train_batches(windows, 4, seed=0)
  for _ in range(3):
    next(it)
  state, _ = _state(sharding.make_mesh(8, 1))
  with Checkpointer(tmp_path, save_every=1, async_save=True) as ckpt:
    assert ckpt.save(3, state, it, {"tokens": 96})
    expected_next = next(it)["tokens"]  # Advancing right after an async save must not leak in.
  small_mesh = sharding.make_mesh(2, 1)
  abstract, specs = _state(small_mesh)
  target = sharding.with_shardings(jax.eval_shape(lambda: abstract), specs)
  fresh = pipeline.train_batches(windows, 4, seed=0)
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    restored, meta = ckpt.restore(target, fresh)
  assert meta == {"tokens": 96}
  np.testing.assert_array_equal(restored.params["w"], state.params["w"])
  assert restored.params["w"].sharding.mesh.devices.size == 2
  assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)  # Types survive.
  np.testing.assert_array_equal(next(fresh)["tokens"], expected_next)


def test_keeps_the_last_n_and_honours_the_interval(tmp_path):
  state, _ = _state(sharding.make_mesh(1, 1))
  with Checkpointer(tmp_path, save_every=2, keep=2, async_save=False) as ckpt:
    saved = [step for step in range(1, 8) if ckpt.save(step, state)]
    assert saved == [2, 4, 6]
    assert ckpt.save(7, state, force=True)
    assert ckpt.all_steps() == [6, 7]


def test_missing_checkpoint_names_the_fix(tmp_path):
  with (
    Checkpointer(tmp_path / "empty", save_every=1) as ckpt,
    pytest.raises(CheckpointError, match="no checkpoint in"),
  ):
    ckpt.restore({})
