"""Device meshes, logical axis rules and global batches: every trainer's one code path.

A mesh has two named axes, `data` (the batch is split across it) and `model` (wide matrices,
and later SAE latents, are split across it). Parameters carry logical axis names
(`nn.with_logical_partitioning`); `LOGICAL_RULES` maps them onto mesh axes, so a new model
only names its axes and never mentions devices. The same code runs on 1 CPU, 8 forced CPU
devices, a GPU, or a multi-host TPU pod (`initialize_distributed`, per-process batches).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsae.errors import JaxsaeError

DATA = "data"
MODEL = "model"

# Logical axis name -> mesh axis. Unlisted names are replicated.
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", DATA),
  ("vocab", MODEL),
  ("mlp", MODEL),
  ("heads", MODEL),
  ("kv_heads", MODEL),  # Replicated where the model axis does not divide them (fit_spec).
  ("latents", MODEL),
  ("embed", None),
  ("head_dim", None),
)


def initialize_distributed(enabled: bool) -> None:
  """Join a multi-process job before anything touches the backend.

  TPU pods, SLURM and other clusters JAX detects need nothing else. Elsewhere (several
  processes on one machine, or hosts without a scheduler) set JAX_COORDINATOR_ADDRESS=host:port,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. CPU processes exchange collectives through gloo.
  """
  if not enabled or jax.distributed.is_initialized():
    return
  kwargs = {}
  if "JAX_NUM_PROCESSES" in os.environ:
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all). `data=-1` takes what `model` leaves.

  Axes are `Auto`: shardings not pinned by the caller are chosen by the compiler.
  """
  devices = list(jax.devices() if devices is None else devices)
  if model < 1 or len(devices) % model:
    raise JaxsaeError(
      f"mesh.model={model} does not divide the {len(devices)} devices; use a divisor of "
      f"{len(devices)}"
    )
  data = len(devices) // model if data == -1 else data
  if data < 1 or data * model > len(devices):
    raise JaxsaeError(
      f"mesh data={data} x model={model} needs {data * model} devices but {len(devices)} are "
      "present; set mesh.data=-1 to use all of them"
    )
  devices = devices[: data * model]  # An explicit smaller mesh uses the first devices.
  return jax.make_mesh((data, model), (DATA, MODEL), (AxisType.Auto,) * 2, devices=devices)


def divisibility_problem(batch_size: int, mesh_data: int, n_devices: int, model: int) -> str | None:
  """The error message when a global batch cannot be split evenly over the data axis."""
  data = n_devices // max(model, 1) if mesh_data == -1 else mesh_data
  if data > 0 and batch_size % data:
    return (
      f"batch size {batch_size} is not divisible by the data axis ({data} devices); use a "
      f"multiple of {data} such as {data * max(1, round(batch_size / data))}, or set mesh.data"
    )
  return None


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, everything else replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Replicate any dimension the mesh axes it is mapped to do not divide (e.g. vocab 257)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    fitted.append(axes if dim % ways == 0 else None)
  return P(*fitted)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """Shardings for a (boxed, abstract) pytree whose leaves carry logical axis names.

  Dimensions whose size the mapped mesh axes do not divide are replicated instead.
  """
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_boxed), rules)
  return jax.tree.map(
    lambda leaf, spec: NamedSharding(mesh, fit_spec(spec, leaf.shape, mesh)),
    nn.meta.unbox(abstract_boxed),
    specs,
  )


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying shardings: the restore target Orbax needs across topologies."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assemble each process's rows into global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }
