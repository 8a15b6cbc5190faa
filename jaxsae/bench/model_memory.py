"""Peak memory per device of a harvest (a language model's forward up to the hooked block), and
of a harvest with an SAE trained beside the model on the same devices (the Gemma 3 text sizes
it is asked about are `jaxsae.bench.gemma3_sizes`).

Measured (`compiled_harvest_memory`): the harvest's jitted forward (`harvest.capture_fn`:
`transformer.run(..., stop_early=True)`, captures cast to float32) lowered on abstract inputs
(ShapeDtypeStructs carrying the shardings `LanguageModel.on_mesh` gives the parameters and
`sharding.batch_sharding` the tokens; nothing is allocated), compiled, and its
`memory_analysis()` read as in `jaxsae.bench.memory`: peak = argument + output + temp − alias.

Planned (`plan_harvest`), per device, with b = batch / data_shards windows of T tokens, M model
ways and c the bytes of the compute dtype (the parameters' dtype: the loaders cast both alike):

    persistent = parameter shard + tokens (b·T·4)
    working    = residual + captures + max(attention, mlp)          (one block at a time)
      residual  = the float32 stream b·T·D·4, unless the capture is the deepest block's
                  resid_post: the stream's adds then run in place in that output buffer
      captures  = each captured hook's float32 copy b·T·w·4 (w = D, or f at mlp.pre/linear/post)
      attention = scores and pattern 2·b·h·T²·4 (+ the pattern cast to c, b·h·T²·c, below
                  float32) + q, k, v b·T·(h + 2g)·K·c
      mlp       = gate, up and their product 3·b·T·f·c
    estimate   = persistent + working ;  total = estimate · (1 + headroom)

h, g, f: the query heads, KV heads and MLP neurons one device holds, H / M where M divides H and
else all H (`sharding.fit_spec` replicates what the model axis does not divide, and every device
then computes every head). The T×T arrays are full size on sliding-window layers too: the
window is a mask on the scores (`positions.attention_mask`), not a smaller matrix.

The parameter shard: each parameter's bytes over the model-axis ways that divide it, exactly as
`sharding.logical_shardings` (`fit_spec`) places it, from the model's own abstract parameters.
The embedding is always needed (the tokens enter through it; Gemma ties it to the unembedding,
which a stopped forward never reaches). Blocks after the hooked one never run, but
`pretrained.load` and `LanguageModel.on_mesh` put every block on the devices, so by default
(`keep_later_blocks=True`) the plan holds them: what a harvest holds today. False plans a loader
that drops them, and is what the compiled forward's arguments count (`jax.jit` leaves unused
arguments out of the executable).

Harvest beside SAE training (`plan_harvest_and_train`): model and SAE keep their state on the
same devices, with the harvested activations waiting to be trained on; the two programs run one
after the other, so their working sets do not add:

    estimate = harvest persistent + captures + SAE persistent
               + max(harvest working − captures, SAE working)

with the SAE's terms from `jaxsae.bench.memory.plan` (latents over the same model axis, batch
over the same data axis).

The counts are checked against the compiled forward on CPU (tests/test_model_memory.py: tiny
configs on 1 and 8 devices and Gemma 3 270M itself, within ±25%, typically ±10%), compiled
with `XLA_CPU_OPTIONS`: XLA:CPU's YNNPACK fusions otherwise materialize the tanh-GELU's constants
as four b·T·f float32 arrays live for the whole program, which no accelerator does. XLA:CPU
also has no bfloat16 dots: it converts every bfloat16 matrix a dot reads to a float32 copy, all
live at once; `xla_cpu=True` adds those copies. The headroom stands for what the model does not
see (fragmentation, collectives' buffers, runtime reservations).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import AbstractMesh

from jaxsae import sharding
from jaxsae.bench import memory
from jaxsae.bench.memory import DTYPE_BYTES, GIB, HEADROOM
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, abstract_params

# Compiler options for checking the counts on CPU (see the module docstring): no YNNPACK fusions.
XLA_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


# ---- parameters ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _parameters(config: TransformerConfig) -> tuple[tuple[str, tuple[int, ...], Any], ...]:
  """(path, shape, mesh PartitionSpec before fitting) of every parameter, from the abstract init."""
  boxed = abstract_params(Transformer(config))
  specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), sharding.LOGICAL_RULES)
  specs = traverse_util.flatten_dict(specs, sep="/", is_leaf=lambda _, v: not isinstance(v, dict))
  shapes = traverse_util.flatten_dict(nn.meta.unbox(boxed), sep="/")
  return tuple((name, tuple(leaf.shape), specs[name]) for name, leaf in shapes.items())


def parameter_shards(
  config: TransformerConfig, model_shards: int = 1
) -> dict[str, tuple[int, int]]:
  """Per parameter path ("blocks_0/attn/query/kernel"): (elements, ways it is split), as
  `sharding.logical_shardings` places it on a mesh with `model_shards` model ways (`fit_spec`:
  a dimension the axis does not divide is replicated)."""
  mesh = AbstractMesh((1, model_shards), (sharding.DATA, sharding.MODEL))
  out = {}
  for name, shape, spec in _parameters(dataclasses.replace(config, dtype="float32")):
    fitted = sharding.fit_spec(spec, shape, mesh)
    axes = [a for dim in fitted for a in ((dim,) if isinstance(dim, str) else (dim or ()))]
    out[name] = (math.prod(shape), math.prod(mesh.shape[a] for a in axes))
  return out


def _in_blocks(name: str, n_blocks: int | None) -> bool:
  """Whether parameter `name` is read by a forward that stops after `n_blocks` blocks: the
  embeddings and those blocks (None: every parameter)."""
  top = name.split("/", 1)[0]
  if n_blocks is None or top in ("embed", "pos_embed"):
    return True
  return top.startswith("blocks_") and int(top.removeprefix("blocks_")) < n_blocks


def parameter_bytes(
  config: TransformerConfig,
  model_shards: int = 1,
  param_dtype: str | None = None,
  n_blocks: int | None = None,
) -> int:
  """Parameter bytes one device holds with `model_shards` model ways: each parameter's bytes
  over the ways that divide it. `n_blocks`: only the embeddings and the first n_blocks blocks
  (what a forward stopping there reads); None: every parameter."""
  width = DTYPE_BYTES[param_dtype or config.dtype]
  return sum(
    elements * width // ways
    for name, (elements, ways) in parameter_shards(config, model_shards).items()
    if _in_blocks(name, n_blocks)
  )


# ---- the harvest ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HarvestPlan(memory.Budget):
  """Bytes per device of one harvest forward (`activations.harvest.capture_fn`), itemized."""

  hooks: tuple[str, ...]
  n_blocks: int  # Blocks the forward runs.
  n_layers: int
  batch: int  # Windows per forward (global).
  seq_len: int
  data_shards: int
  model_shards: int
  param_dtype: str
  device_memory_bytes: int
  headroom: float
  parameters: int  # The parameter shard held (every block, or only those run).
  tokens: int
  residual: int  # The float32 stream, when it is not itself the capture.
  captures: int  # Float32 copies of the captured hooks (the forward's output).
  attention: int  # Scores, pattern (and its cast), q, k, v of one layer.
  mlp: int  # Gate, up and their product of one layer.
  cpu_upcasts: int  # XLA:CPU's float32 copies of bfloat16 matrices (0 elsewhere).

  @property
  def devices(self) -> int:
    return self.data_shards * self.model_shards

  @property
  def persistent(self) -> int:
    """Held across forwards: the parameter shard, and the tokens."""
    return self.parameters + self.tokens

  @property
  def working(self) -> int:
    """Arrays of one forward: residual stream, captures, and the busier phase of a block."""
    return self.residual + self.captures + max(self.attention, self.mlp) + self.cpu_upcasts

  def items(self) -> dict[str, int]:
    names = "parameters tokens residual captures attention mlp cpu_upcasts"
    return {name: getattr(self, name) for name in names.split()}

  def explain(self) -> str:
    """A human-readable breakdown per device (GiB, or MiB below 1 GiB)."""
    unit, size = _unit(self.total)
    lines = [
      f"harvest of {', '.join(self.hooks)}: {self.n_blocks} of {self.n_layers} blocks run, "
      f"{self.batch} x {self.seq_len} tokens per forward, params {self.param_dtype}",
      f"mesh data={self.data_shards} x model={self.model_shards} ({self.devices} devices)",
    ]
    lines += [f"  {name:<17} {value / size:9.3f} {unit}" for name, value in self.items().items()]
    return "\n".join(lines + _verdict(self, unit, size))


def _unit(total: int) -> tuple[str, int]:
  return ("GiB", GIB) if total >= GIB else ("MiB", 2**20)


def _verdict(p, unit: str, size: int) -> list[str]:
  verdict = "fits" if p.fits else "does NOT fit"
  return [
    f"  = persistent      {p.persistent / size:9.3f} {unit}",
    f"  + working         {p.working / size:9.3f} {unit}",
    f"  = estimate        {p.estimate / size:9.3f} {unit}",
    f"  total (+{p.headroom:.0%} headroom) {p.total / size:.3f} {unit} of "
    f"{p.device_memory_bytes / GIB:.1f} GiB: {verdict} ({p.free_bytes / GIB:+.2f} GiB)",
  ]


def _held(n: int, ways: int) -> int:
  """What a device holds of n heads or neurons split `ways` ways: n / ways where that divides,
  else all n (`fit_spec` replicates)."""
  return n // ways if n % ways == 0 else n


MLP_WIDE_SITES = ("mlp.pre", "mlp.linear", "mlp.post")


def hook_width(config: TransformerConfig, hook: str) -> int:
  """Per-token width of a harvestable block hook: d_mlp at MLP_WIDE_SITES, else d_model."""
  layer, site = hooks_lib.parse(hooks_lib.canonical(hook))
  if layer is None or site in (*hooks_lib.PER_HEAD_SITES, "attn.scores", "attn.pattern"):
    raise ValueError(
      f"hook {hook!r}: plan a block hook with one vector per token (resid_*, attn.in, "
      "attn.out, mlp.*)"
    )
  return config.d_mlp if site in MLP_WIDE_SITES else config.d_model


def plan_harvest(
  config: TransformerConfig,
  hooks: str | Sequence[str],
  batch: int,
  seq_len: int,
  data_shards: int = 1,
  model_shards: int = 1,
  device_memory_bytes: int = 80 * GIB,
  *,
  param_dtype: str | None = None,
  keep_later_blocks: bool = True,
  xla_cpu: bool = False,
  headroom: float = HEADROOM,
) -> HarvestPlan:
  """Planned bytes per device of one harvest forward (the model: this module's docstring).

  Args:
    config: the language model.
    hooks: the hook name(s) captured, e.g. "blocks.12.resid_post"; the forward stops after the
      deepest one's block.
    batch, seq_len: windows per forward (global) and tokens per window.
    data_shards, model_shards: the mesh; windows split over data, parameters over model.
    device_memory_bytes: memory per device.
    param_dtype: parameters and compute (default: config.dtype; the loaders cast both alike).
    keep_later_blocks: count the blocks after the deepest hook (loaded, never run).
    xla_cpu: plan what XLA:CPU compiles (its float32 copies of bfloat16 matrices), for checks
      on CPU.
    headroom: fraction added to the estimate before comparing with the device memory.
  """
  hooks = tuple(hooks_lib.canonical(h) for h in ((hooks,) if isinstance(hooks, str) else hooks))
  if batch % data_shards:
    raise ValueError(f"batch={batch} must divide by data_shards={data_shards}")
  widths = [hook_width(config, h) for h in hooks]  # Refuses hooks outside the blocks.
  n_blocks = hooks_lib.blocks_needed(hooks)
  param_dtype = param_dtype or config.dtype
  c = DTYPE_BYTES[param_dtype]
  M, T, K = model_shards, seq_len, config.d_head
  rows = batch // data_shards * T
  h, g, f = _held(config.n_heads, M), _held(config.kv_heads, M), _held(config.d_mlp, M)
  scores = rows * h * T  # b·h·T·T entries.
  upcasts = 0
  if xla_cpu and c < 4:
    upcasts = 4 * sum(
      elements // ways
      for name, (elements, ways) in parameter_shards(config, M).items()
      if name.endswith("kernel") and _in_blocks(name, n_blocks) and name.startswith("blocks_")
    )
  return HarvestPlan(
    hooks=hooks,
    n_blocks=n_blocks,
    n_layers=config.n_layers,
    batch=batch,
    seq_len=seq_len,
    data_shards=data_shards,
    model_shards=model_shards,
    param_dtype=param_dtype,
    device_memory_bytes=int(device_memory_bytes),
    headroom=headroom,
    parameters=parameter_bytes(config, M, param_dtype, None if keep_later_blocks else n_blocks),
    tokens=rows * 4,
    # The stream's last value is the capture itself when that is the deepest block's resid_post:
    # the adds run in place in the output buffer.
    residual=0 if f"blocks.{n_blocks - 1}.resid_post" in hooks else rows * config.d_model * 4,
    captures=sum(
      rows * (_held(w, M) if hooks_lib.parse(hk)[1] in MLP_WIDE_SITES else w) * 4
      for hk, w in zip(hooks, widths, strict=True)
    ),
    attention=2 * scores * 4 + (scores * c if c < 4 else 0) + rows * (h + 2 * g) * K * c,
    mlp=3 * rows * f * c,
    cpu_upcasts=upcasts,
  )


# ---- harvest + SAE -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HarvestTrainPlan(memory.Budget):
  """A harvest and an SAE's training steps on the same devices, run one after the other."""

  harvest: HarvestPlan
  sae: memory.MemoryPlan
  device_memory_bytes: int
  headroom: float

  @property
  def persistent(self) -> int:
    """Model and SAE state, and the harvested activations waiting to be trained on."""
    return self.harvest.persistent + self.harvest.captures + self.sae.persistent

  @property
  def working(self) -> int:
    """The busier program's arrays: a forward (less its captures) or a training step."""
    return max(self.harvest.working - self.harvest.captures, self.sae.working)

  def explain(self) -> str:
    """A human-readable breakdown per device (GiB, or MiB below 1 GiB)."""
    unit, size = _unit(self.total)
    h, s = self.harvest, self.sae
    lines = [
      f"harvest of {', '.join(h.hooks)} ({h.batch} x {h.seq_len} tokens per forward) + "
      f"{s.architecture} SAE d={s.d} n={s.n} k={s.k} batch={s.batch} ({s.path} path)",
      f"mesh data={h.data_shards} x model={h.model_shards} ({h.devices} devices)",
      f"  model state       {h.persistent / size:9.3f} {unit}",
      f"  harvested rows    {h.captures / size:9.3f} {unit}",
      f"  SAE state         {s.persistent / size:9.3f} {unit}",
      f"  forward working   {(h.working - h.captures) / size:9.3f} {unit}",
      f"  SAE step working  {s.working / size:9.3f} {unit}",
    ]
    return "\n".join(lines + _verdict(self, unit, size))


def plan_harvest_and_train(
  config: TransformerConfig,
  hooks: str | Sequence[str],
  batch: int,
  seq_len: int,
  *,
  n: int,
  k: int,
  sae_batch: int,
  data_shards: int = 1,
  model_shards: int = 1,
  device_memory_bytes: int = 80 * GIB,
  headroom: float = HEADROOM,
  sae_kwargs: dict | None = None,
  **harvest_kwargs,
) -> HarvestTrainPlan:
  """Planned bytes per device of harvesting `hooks` and training a TopK SAE of n latents on the
  (first) hook's activations beside the model, on the same (data, model) mesh.

  `sae_kwargs` go to `jaxsae.bench.memory.plan` (path, dtype, k_aux, …); `harvest_kwargs` to
  `plan_harvest` (param_dtype, keep_later_blocks, xla_cpu).
  """
  harvest = plan_harvest(
    config,
    hooks,
    batch,
    seq_len,
    data_shards,
    model_shards,
    device_memory_bytes,
    headroom=headroom,
    **harvest_kwargs,
  )
  d = hook_width(config, harvest.hooks[0])
  sae = memory.plan(
    d,
    n,
    k,
    sae_batch,
    data_shards,
    model_shards,
    device_memory_bytes=device_memory_bytes,
    headroom=headroom,
    **(sae_kwargs or {}),
  )
  return HarvestTrainPlan(harvest, sae, int(device_memory_bytes), headroom)


# ---- measured ------------------------------------------------------------------------------------
def abstract_sharded_params(config: TransformerConfig, mesh, param_dtype: str | None = None):
  """The model's parameters as ShapeDtypeStructs in `param_dtype`, carrying the shardings
  `LanguageModel.on_mesh` gives them: nothing is allocated."""
  boxed = abstract_params(Transformer(config))
  dtype = jnp.dtype(param_dtype or config.dtype)
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype, sharding=s),
    nn.meta.unbox(boxed),
    sharding.logical_shardings(boxed, mesh),
  )


def compiled_harvest_memory(
  config: TransformerConfig,
  hooks: str | Sequence[str],
  batch: int,
  seq_len: int,
  data_shards: int = 1,
  model_shards: int = 1,
  *,
  param_dtype: str | None = None,
  devices=None,
  compiler_options: dict | None = None,
) -> memory.CompiledMemory:
  """Memory analysis of the harvest's jitted forward (`activations.harvest.capture_fn`) on a
  (data_shards, model_shards) mesh of `devices` (default: all), compiled on abstract inputs and
  never run. Unused parameters (later blocks) are not among its arguments."""
  from jaxsae.activations.harvest import capture_fn

  hooks = (hooks,) if isinstance(hooks, str) else tuple(hooks)
  devices = list(jax.devices() if devices is None else devices)
  mesh = sharding.make_mesh(data_shards, model_shards, devices)
  params = abstract_sharded_params(config, mesh, param_dtype)
  tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=sharding.batch_sharding(mesh))
  lowered = capture_fn(config, hooks).lower(params, tokens)
  return memory.compiled_memory(lowered.compile(compiler_options=compiler_options))
