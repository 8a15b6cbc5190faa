"""Peak memory per device of SAE training: measured from XLA's compiled memory analysis, and
planned from the shapes.

Measured (`compiled_step_memory`): the real jitted training step (`SAETrainer.make_step`: the
`GroupTrainer` shard_map loss, Adam, constraints, dead-latent counters, donated state) is lowered
and compiled on abstract inputs (ShapeDtypeStructs carrying their shardings, so nothing is
allocated) and `Compiled.memory_analysis()` is read. Its figures are per device:

    peak ≈ argument + output + temp − alias

argument: the state and batch shards; output: the new state and the metrics; alias: outputs
written over donated arguments (the state), counted once; temp: XLA's buffer assignment for every
intermediate (live ranges packed, fragmentation included). Generated code is reported, not added.

Planned (`plan`): the same bytes counted from (d, n, k, batch, mesh, dtypes), per device, with
B = batch / data_shards rows and n_l = n / model_shards latents held, P the parameter shard:

    persistent = P + Adam μ, ν (2P) + counters + batch shard
    working    = max(forward, backward, update)
      forward  = n-wide activations + B×d rows + top-k buffers (+ sparse partials, no AuxK)
      backward = gradients (P) (+ P with AuxK) + gradient partials + n-wide tail + B×d rows
      update   = gradients + P/2 (the update in flight)
    estimate   = persistent + working ;  total = estimate · (1 + headroom)

P: W_enc d×n_l, W_dec n_l×d, b_dec d and the per-latent vectors (b_enc; Gated b_gate, r_mag,
b_mag; JumpReLU b_enc, threshold). Adam keeps μ and ν in the parameter dtype (optax's default).
Counters: two int32 per latent (tokens since fired, firings in the log window).
n-wide (B×n_l) arrays at the forward peak:
  dense:  pre, z, dz, d pre (4; Gated, JumpReLU 6); AuxK adds the masked pre, z_aux, its gradient;
          Multi-TopK the top-4k's z and its gradient.
          d pre stays beside the gradients at the end of the backward (the tail).
  sparse: pre (the chosen latents' values and gradients are B×k); AuxK adds the masked pre.
  An encoder bias add the backend does not fuse into the matmul (XLA:CPU, `fused_bias=False`)
  keeps the matmul output as one more array. Ranking is in float32 (`collectives`,
  `sparse_topk`): a bfloat16 pre costs a float32 copy for the top-k, and AuxK's masked copy is
  float32 too (the two are not live at once).
Top-k buffers: float32 values and int32 indices, B×k per selection (k; 4k with Multi-TopK; k_aux),
and with latents split over M shards the M·k candidates each device gathers for the exact top-k
(`collectives.top_k_over_latents`), which grow with M. B×d rows: input, centred input, x̂ and the
residual, 4 arrays. Gradient partials: the dense path's AuxK decoder product (½P); the sparse
path's custom VJPs scatter into their own dW_enc, dW_dec per selection and keep W_encᵀ and the
transposed dW_enc (P per selection). With AuxK the loss runs under a `lax.cond` that skips it
while no latent is dead (`GroupTrainer.loss_skipping_aux_k`): the gradients leave the branch as a
copy (one more P). Without it XLA:CPU allocates the sparse partials before the forward peak.

The counts are checked against the compiled step on CPU (tests/test_memory_plan.py: within ±25%
on 1 and 8 devices, typically ±10%). Buffer assignment, fusion and the top-k implementation differ
on TPU; the headroom stands for what the model does not see (fragmentation, runtime
reservations, backend top-k workspace). `suggest_mesh` searches the (data, model) splits of a
device count, model split smallest first, and halves the batch when none fits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxsae import sharding
from jaxsae.sae import train_config
from jaxsae.sae.train import SAETrainer

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PATHS = ("dense", "sparse")
TOPK_FAMILY = ("topk", "batchtopk")  # Architectures with a top-k and AuxK.
# Per-latent parameter vectors besides W_enc, W_dec: b_enc; Gated b_gate, r_mag, b_mag.
LATENT_VECTORS = {"gated": 3, "jumprelu": 2}
# n-wide (B×n_l) arrays at the forward peak with a fused encoder bias, per path and architecture
# (dense: pre, z, dz, d pre; Gated and JumpReLU add gate or step arrays); and AuxK's extra ones.
N_WIDE = {"dense": {"default": 4, "gated": 6, "jumprelu": 6}, "sparse": {"default": 1}}
N_WIDE_AUXK = {"dense": 3, "sparse": 1}
N_WIDE_TAIL = {"dense": 1, "sparse": 0}  # d pre, live while the encoder gradient is formed.
ROW_ARRAYS = 4  # B×d float arrays live at once (input, centred, x̂, residual / their gradients).
UPDATE_TRANSIENT = 0.5  # Parameter-sized buffers of the optimizer update beyond the gradients.
HEADROOM = 0.10  # Fraction added to the estimate for what the model does not count.


# ---- measured -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CompiledMemory:
  """`memory_analysis()` of a compiled computation, bytes per device."""

  argument: int
  output: int
  temp: int
  alias: int
  generated_code: int

  @property
  def peak(self) -> int:
    """argument + output + temp − alias (donated outputs counted once); code not included."""
    return self.argument + self.output + self.temp - self.alias


def compiled_peak_bytes(compiled) -> int:
  """Peak bytes per device of a `jax.stages.Compiled`: argument + output + temp − alias."""
  return compiled_memory(compiled).peak


def compiled_memory(compiled) -> CompiledMemory:
  m = compiled.memory_analysis()
  return CompiledMemory(
    argument=int(m.argument_size_in_bytes),
    output=int(m.output_size_in_bytes),
    temp=int(m.temp_size_in_bytes),
    alias=int(m.alias_size_in_bytes),
    generated_code=int(m.generated_code_size_in_bytes),
  )


def step_config(
  *,
  n: int,
  k: int,
  batch: int,
  data_shards: int = 1,
  model_shards: int = 1,
  architecture: str = "topk",
  path: str = "sparse",
  k_aux: int = -1,
) -> ml_collections.ConfigDict:
  """A one-SAE training config of this shape on a (data_shards, model_shards) mesh; `path` sets
  `sae.topk_path` (TopK only)."""
  config = train_config.base_config(architecture)
  config.sae.n_latents, config.sae.k, config.sae.k_aux = n, k, k_aux
  config.sae.topk_path = path
  config.train.batch_size = batch
  config.mesh.data, config.mesh.model = data_shards, model_shards
  return config


def compiled_step_memory(
  config: ml_collections.ConfigDict, d_in: int, devices=None
) -> CompiledMemory:
  """Memory analysis of the real training step for `config`, compiled but never run.

  The mesh is (config.mesh.data, config.mesh.model) over the first devices of `devices`
  (default: all); state and batch are ShapeDtypeStructs with the trainer's shardings.
  """
  devices = list(jax.devices() if devices is None else devices)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model, devices)
  trainer = SAETrainer.build(config, d_in, mesh)
  state = sharding.with_shardings(trainer.abstract_state(), trainer.state_shardings())
  x = jax.ShapeDtypeStruct(
    (config.train.batch_size, d_in), jnp.float32, sharding=sharding.batch_sharding(mesh)
  )
  return compiled_memory(trainer.make_step(scale=1.0).lower(state, x).compile())


# ---- planned ------------------------------------------------------------------------------------
class Budget:
  """What every plan derives from its `persistent` and `working` bytes, its `headroom` and its
  `device_memory_bytes`."""

  @property
  def estimate(self) -> int:
    """Planned peak bytes per device, before headroom (compare with the compiled peak)."""
    return self.persistent + self.working

  @property
  def total(self) -> int:
    """estimate · (1 + headroom): what must fit."""
    return int(self.estimate * (1 + self.headroom))

  @property
  def fits(self) -> bool:
    return self.total <= self.device_memory_bytes

  @property
  def free_bytes(self) -> int:
    """Device memory left after `total` (negative: short by that much)."""
    return self.device_memory_bytes - self.total


@dataclasses.dataclass(frozen=True)
class MemoryPlan(Budget):
  """Bytes per device of one training step for one configuration, itemized."""

  d: int
  n: int
  k: int
  batch: int
  data_shards: int
  model_shards: int
  dtype: str
  param_dtype: str
  architecture: str
  path: str
  device_memory_bytes: int
  headroom: float
  parameters: int
  gradients: int
  adam_moments: int
  counters: int
  batch_shard: int
  activations: int  # n-wide (B×n_l) arrays at the forward peak.
  rows: int  # B×d arrays.
  topk_buffers: int  # Values, indices and gathered candidates of every top-k.
  gradient_partials: int  # Parameter-sized backward buffers beyond the gradients.
  backward_tail: int  # n-wide arrays live beside the gradients at the end of the backward.
  update_transient: int  # Optimizer-update buffers beyond the gradients.
  early_partials: int  # Gradient partials already live at the forward peak (sparse path).
  cond_copy: int  # Gradients copied out of AuxK's lax.cond (`GroupTrainer.loss_skipping_aux_k`).

  @property
  def devices(self) -> int:
    return self.data_shards * self.model_shards

  @property
  def persistent(self) -> int:
    """Held across the step: parameters, Adam moments, counters, and the batch shard."""
    return self.parameters + self.adam_moments + self.counters + self.batch_shard

  @property
  def phases(self) -> dict[str, int]:
    """Working memory of each phase of the step; the largest is the step's."""
    return {
      "forward": self.activations + self.rows + self.topk_buffers + self.early_partials,
      "backward": (
        self.gradients + self.cond_copy + self.gradient_partials + self.backward_tail + self.rows
      ),
      "update": self.gradients + self.update_transient,
    }

  @property
  def working(self) -> int:
    return max(self.phases.values())

  def items(self) -> dict[str, int]:
    names = (
      "parameters gradients adam_moments counters batch_shard activations rows topk_buffers "
      "gradient_partials cond_copy backward_tail update_transient"
    )
    return {name: getattr(self, name) for name in names.split()}

  def explain(self) -> str:
    """A human-readable breakdown per device (GiB, or MiB below 1 GiB)."""
    unit, size = ("GiB", GIB) if self.total >= GIB else ("MiB", 2**20)
    b_local, n_local = self.batch // self.data_shards, self.n // self.model_shards
    lines = [
      f"{self.architecture} SAE d={self.d} n={self.n} k={self.k} batch={self.batch}, "
      f"{self.path} path, params {self.param_dtype}, activations {self.dtype}",
      f"mesh data={self.data_shards} x model={self.model_shards} ({self.devices} devices): "
      f"{b_local} rows x {n_local} latents per device",
    ]
    lines += [f"  {name:<18} {value / size:9.3f} {unit}" for name, value in self.items().items()]
    phases = self.phases
    worst = max(phases, key=phases.get)
    lines.append(f"  = persistent       {self.persistent / size:9.3f} {unit}")
    for name, value in phases.items():
      mark = "  <- peak" if name == worst else ""
      lines.append(f"  + phase {name:<10} {value / size:9.3f} {unit}{mark}")
    lines.append(f"  = estimate         {self.estimate / size:9.3f} {unit}")
    verdict = "fits" if self.fits else "does NOT fit"
    lines.append(
      f"  total (+{self.headroom:.0%} headroom) {self.total / size:.3f} {unit} of "
      f"{self.device_memory_bytes / GIB:.1f} GiB: {verdict} "
      f"({self.free_bytes / GIB:+.2f} GiB)"
    )
    return "\n".join(lines)


def _bytes(dtype: str) -> int:
  if dtype not in DTYPE_BYTES:
    raise ValueError(f"dtype {dtype!r}: choose one of {sorted(DTYPE_BYTES)}")
  return DTYPE_BYTES[dtype]


def plan(
  d: int,
  n: int,
  k: int,
  batch: int,
  data_shards: int = 1,
  model_shards: int = 1,
  dtype: str = "float32",
  param_dtype: str = "float32",
  architecture: str = "topk",
  path: str = "sparse",
  device_memory_bytes: int = 95 * GIB,
  *,
  k_aux: int = -1,
  multi_topk: bool = False,
  members: int = 1,
  fused_bias: bool = True,
  headroom: float = HEADROOM,
) -> MemoryPlan:
  """Planned bytes per device of one training step (the model: this module's docstring).

  Args:
    d, n, k, batch: input width, latents, active latents, global tokens per step.
    data_shards, model_shards: the mesh; batch rows split over data, latents over model.
    dtype: how activations (pre-activations, rows) are stored; param_dtype: parameters,
      gradients and Adam. The trainer's mixed precision (`sae.compute_dtype="bfloat16"`:
      bfloat16 operands, float32 results) stores float32 activations: plan it as float32.
    architecture: a registry name. Only TopK has a sparse path; others plan as dense.
    path: "dense" (B×n latents and their gradients) or "sparse" (only pre is n-wide).
    device_memory_bytes: memory per device (e.g. 95 GiB for a TPU v5p chip).
    k_aux: AuxK latents (-1: d // 2, the config default; 0: off). TopK and BatchTopK only.
    multi_topk: also train on a top-4k (TopK only).
    members: SAEs trained together (a sweep group); every term but the batch scales with it.
    fused_bias: the encoder bias add is fused into the matmul's output (accelerators). XLA:CPU
      keeps the matmul output and pre = output + b_enc as two n-wide buffers: plan it False.
    headroom: fraction added to the estimate before comparing with the device memory.
  """
  if path not in PATHS:
    raise ValueError(f"path={path!r}: choose one of {PATHS}")
  if batch % data_shards or n % model_shards:
    raise ValueError(
      f"batch={batch} must divide by data_shards={data_shards} and n={n} by "
      f"model_shards={model_shards}"
    )
  path = path if architecture == "topk" else "dense"
  pb, ab = _bytes(param_dtype), _bytes(dtype)
  rows, latents = batch // data_shards, n // model_shards
  matrices = 2 * d * latents * pb  # W_enc, W_dec shards.
  params = matrices + (LATENT_VECTORS.get(architecture, 1) * latents + d) * pb
  aux = min(d // 2 if k_aux == -1 else k_aux, n) if architecture in TOPK_FAMILY else 0
  entry = rows * latents

  # n-wide arrays (see N_WIDE*). Ranking is in float32: a narrower pre is ranked through a
  # float32 copy, and AuxK's masked pre is that copy's dtype (the two are not live together).
  n_wide = N_WIDE[path].get(architecture, N_WIDE[path]["default"]) + (0 if fused_bias else 1)
  n_aux = N_WIDE_AUXK[path] if aux else 0
  n_wide += 2 * multi_topk * (path == "dense")  # The top-4k's own z and its gradient.
  if ab == 4 or architecture not in TOPK_FAMILY:
    activations = (n_wide + n_aux) * entry * ab
  else:
    activations = ((n_wide + n_aux - (1 if aux else 0)) * ab + 4) * entry

  # Top-k selections (values f32 + indices s32), and the M·k candidates gathered per row. The
  # sparse path takes Multi-TopK's k-set as the first k of one top-4k; the dense path takes both.
  if architecture == "topk":
    selections = [4 * k] if multi_topk and path == "sparse" else [k] + [4 * k] * multi_topk
  else:
    selections = []
  selections += [aux] if aux else []
  gathered = model_shards + 1 if model_shards > 1 else 1
  topk = sum(rows * min(s, latents) * 8 * gathered for s in selections)
  if architecture == "batchtopk":  # Each device's top k·B entries, gathered over the mesh.
    topk += min(k * batch, entry) * 4 * (data_shards * model_shards + 1)

  if path == "sparse":
    # Each selection's custom VJPs scatter-add into their own dW_enc, dW_dec (AuxK: a second
    # pair; Multi-TopK: a second decode's dW_dec), beside the W_encᵀ row-gather table and the
    # transposed dW_enc.
    partials = matrices * (2 if aux else 1) + matrices // 2 * multi_topk
  else:
    partials = matrices // 2 * (1 if aux else 0)  # AuxK's own dW_dec product.

  return MemoryPlan(
    d=d,
    n=n,
    k=k,
    batch=batch,
    data_shards=data_shards,
    model_shards=model_shards,
    dtype=dtype,
    param_dtype=param_dtype,
    architecture=architecture,
    path=path,
    device_memory_bytes=int(device_memory_bytes),
    headroom=headroom,
    parameters=members * params,
    gradients=members * params,
    adam_moments=members * 2 * params,
    counters=members * 2 * latents * 4,
    batch_shard=rows * d * 4,
    activations=members * activations,
    rows=members * ROW_ARRAYS * rows * d * ab,
    topk_buffers=members * topk,
    gradient_partials=members * partials,
    backward_tail=members * N_WIDE_TAIL[path] * entry * ab,
    update_transient=int(members * UPDATE_TRANSIENT * params),
    early_partials=members * partials if path == "sparse" and not aux else 0,
    cond_copy=members * params if aux else 0,
  )


def mesh_splits(devices: int) -> list[tuple[int, int]]:
  """(data_shards, model_shards) for every model split dividing `devices`, smallest first."""
  return [(devices // m, m) for m in range(1, devices + 1) if devices % m == 0]


def suggest_mesh(
  d: int,
  n: int,
  k: int,
  batch: int,
  devices: int,
  device_memory_bytes: int,
  *,
  min_batch: int = 1,
  **plan_kwargs: Any,
) -> MemoryPlan | None:
  """The fitting plan with the smallest model-axis split over `devices`, at the largest batch.

  Tries every (data, model) split of `devices` at `batch`, model split smallest first (the least
  latent communication); if none fits, halves the batch, down to `min_batch`. None when nothing
  fits. `plan_kwargs` go to `plan` (dtype, path, k_aux, …).
  """
  b = batch
  while b >= min_batch:
    for data, model in mesh_splits(devices):
      if b % data or n % model:
        continue
      p = plan(d, n, k, b, data, model, device_memory_bytes=device_memory_bytes, **plan_kwargs)
      if p.fits:
        return p
    if b % 2:
      break
    b //= 2
  return None
