"""The memory planner against XLA's compiled memory analysis of the real SAE step, and its answers:
fits flips at the right size, suggest_mesh fits, the 16M-latent case needs a pod slice."""

import jax
import jax.numpy as jnp
import pytest

from jaxsae.bench import memory
from jaxsae.bench.memory import GIB

# Planned estimate / compiled peak must lie within 1 ± TOLERANCE (CPU buffer assignment).
TOLERANCE = 0.25
V5P = 95 * GIB


def _compiled(d, n, k, batch, data, model, path):
  config = memory.step_config(
    n=n, k=k, batch=batch, data_shards=data, model_shards=model, path=path
  )
  return memory.compiled_step_memory(config, d)


def _assert_close(planned: memory.MemoryPlan, measured: memory.CompiledMemory):
  ratio = planned.estimate / measured.peak
  assert abs(ratio - 1) <= TOLERANCE, (ratio, planned.explain(), measured)


def test_compiled_peak_counts_donated_arguments_once():
  x = jax.ShapeDtypeStruct((512, 512), jnp.float32)
  compiled = jax.jit(lambda a: a * 2 + 1, donate_argnums=0).lower(x).compile()
  m = memory.compiled_memory(compiled)
  size = 512 * 512 * 4
  assert m.argument == size and m.output == size and m.alias == size
  assert memory.compiled_peak_bytes(compiled) == m.peak == size + m.temp


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.slow
def test_plan_matches_compiled_step_on_one_device(path):
  shape = dict(d=256, n=4096, k=8, batch=1024)
  measured = _compiled(**shape, data=1, model=1, path=path)
  _assert_close(memory.plan(**shape, path=path, fused_bias=False), measured)


@pytest.mark.parametrize(
  "shape, mesh",
  [
    (dict(d=128, n=8192, k=16, batch=1024), (2, 4)),
    (dict(d=64, n=4096, k=8, batch=512), (8, 1)),
  ],
)
@pytest.mark.slow
def test_plan_matches_compiled_step_on_eight_devices(shape, mesh):
  measured = _compiled(**shape, data=mesh[0], model=mesh[1], path="sparse")
  planned = memory.plan(**shape, data_shards=mesh[0], model_shards=mesh[1], fused_bias=False)
  _assert_close(planned, measured)


def test_fits_flips_at_the_planned_total():
  shape = dict(d=4096, n=2**20, k=32, batch=8192, data_shards=2, model_shards=4)
  total = memory.plan(**shape).total
  assert memory.plan(**shape, device_memory_bytes=total).fits
  assert not memory.plan(**shape, device_memory_bytes=total - 1).fits
  assert memory.plan(**shape, device_memory_bytes=total - 1).free_bytes == -1


def test_plan_terms_scale_with_the_mesh_and_dtypes():
  shape = dict(d=1024, n=2**16, k=32, batch=4096)
  one, split = memory.plan(**shape), memory.plan(**shape, data_shards=2, model_shards=4)
  assert split.parameters * 4 == pytest.approx(one.parameters, rel=1e-3)
  assert split.activations * 8 == one.activations
  assert memory.plan(**shape, path="dense").activations > 3 * one.activations
  assert memory.plan(**shape, param_dtype="bfloat16").adam_moments * 2 == one.adam_moments
  # A bfloat16 pre (2 bytes) + one float32 copy for ranking / AuxK: 6 bytes instead of 8.
  assert memory.plan(**shape, dtype="bfloat16").activations * 8 == one.activations * 6
  assert "does NOT fit" in memory.plan(**shape, device_memory_bytes=GIB // 4).explain()


def test_suggest_mesh_returns_the_smallest_fitting_model_split():
  shape = dict(d=1024, n=2**18, k=32, batch=4096)
  budget = memory.plan(**shape, data_shards=2, model_shards=4).total
  best = memory.suggest_mesh(**shape, devices=8, device_memory_bytes=budget)
  assert best is not None and best.fits and best.batch == shape["batch"] and best.devices == 8
  for data, model in memory.mesh_splits(8):
    if model < best.model_shards:
      p = memory.plan(**shape, data_shards=data, model_shards=model, device_memory_bytes=budget)
      assert not p.fits
  # Too little memory for the full batch on any split: the batch halves until one fits.
  small = memory.plan(**{**shape, "batch": 1024}, data_shards=1, model_shards=8).total
  halved = memory.suggest_mesh(**shape, devices=8, device_memory_bytes=small)
  assert halved is not None and halved.fits and halved.batch < shape["batch"]
  assert memory.suggest_mesh(**shape, devices=8, device_memory_bytes=1) is None


def test_16m_latents_need_a_pod_slice():
  shape = dict(d=4096, n=2**24, k=32, batch=131072)
  one_chip = memory.plan(**shape, device_memory_bytes=V5P)
  assert not one_chip.fits and one_chip.parameters > 60 * GIB
  assert memory.suggest_mesh(**shape, devices=8, device_memory_bytes=V5P, min_batch=256) is None
  slice_256 = memory.suggest_mesh(**shape, devices=256, device_memory_bytes=V5P)
  assert slice_256 is not None and slice_256.fits and slice_256.model_shards > 1
  assert 1024 <= slice_256.batch <= shape["batch"]
  # The full batch in one step takes more than 256 chips (AuxK's masked pre and candidates).
  full = [
    memory.suggest_mesh(**shape, devices=2**i, device_memory_bytes=V5P, min_batch=131072)
    for i in range(8, 12)
  ]
  assert full[0] is None and any(p is not None and p.fits for p in full)
  assert memory.suggest_mesh(**shape, devices=256, device_memory_bytes=V5P, k_aux=0).batch == 131072
