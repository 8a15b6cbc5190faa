"""Will an SAE training run fit? The planned peak memory per device (`jaxsae.bench.memory`).

  python -m experiments.bench.memory_plan --d=4096 --n=16777216 --k=32 --batch=131072 \
      --data=4 --model=64 --device_memory_gib=95            # one mesh, itemized
  python -m experiments.bench.memory_plan --devices=256 ...  # the smallest model split that fits
  python -m experiments.bench.memory_plan --d=256 --n=4096 --k=8 --batch=1024 --compile \
      --fused_bias=False                                     # plan beside the compiled step here
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m experiments.bench.memory_plan --worked_example   # writes docs/bench/memory.md

The worked example also compiles a few small shapes on this host's devices (meshes of up to 8;
those needing more devices than there are are skipped) to show the planner's error.

The worked example is the TopK paper's scale, a 16M-latent (n = 2^24) SAE at k = 32 on d = 4096
activations with the 131072-token batch of OpenAI's reference trainer, on TPU v5p and v4 slices.

Real models (a harvest, and an SAE trained beside the model): experiments/bench/gemma3_memory.py.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
from absl import flags

from jaxsae import cli, tables
from jaxsae.bench import memory
from jaxsae.bench.memory import GIB

_D = flags.DEFINE_integer("d", 4096, "Input width.")
_N = flags.DEFINE_integer("n", 2**24, "Latents.")
_K = flags.DEFINE_integer("k", 32, "Active latents.")
_BATCH = flags.DEFINE_integer("batch", 131072, "Global tokens per step.")
_DATA = flags.DEFINE_integer("data", 1, "Data-axis shards.")
_MODEL = flags.DEFINE_integer("model", 1, "Model-axis (latent) shards.")
_DEVICES = flags.DEFINE_integer("devices", 0, "If > 0: suggest a mesh over this many devices.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(memory.DTYPE_BYTES), "Activations.")
_PARAM_DTYPE = flags.DEFINE_enum("param_dtype", "float32", list(memory.DTYPE_BYTES), "Params.")
_ARCHITECTURE = flags.DEFINE_string("architecture", "topk", "SAE architecture.")
_PATH = flags.DEFINE_enum("path", "sparse", list(memory.PATHS), "TopK training path.")
_K_AUX = flags.DEFINE_integer("k_aux", -1, "AuxK latents (-1: d // 2; 0: off).")
_MEMORY = flags.DEFINE_float("device_memory_gib", 95.0, "Memory per device, GiB.")
_FUSED_BIAS = flags.DEFINE_boolean("fused_bias", True, "Bias add fused into the matmul (not CPU).")
_HEADROOM = flags.DEFINE_float("headroom", memory.HEADROOM, "Fraction added to the estimate.")
_COMPILE = flags.DEFINE_boolean("compile", False, "Also compile the real step on these devices.")
_WORKED = flags.DEFINE_boolean("worked_example", False, "Write the 16M-latent TPU worked example.")
_OUT = flags.DEFINE_string("out", "docs/bench/memory.md", "Where --worked_example writes.")

# HBM per chip (Google Cloud TPU system architecture pages): v5p 95 GiB, v4 32 GiB.
CHIPS = {"TPU v5p": 95, "TPU v4": 32}
SLICES = (8, 16, 32, 64, 128, 256)
DTYPES = (("float32", "float32"), ("float32", "bfloat16"), ("bfloat16", "bfloat16"))
WORKED = dict(d=4096, n=2**24, k=32, batch=131072)
# Small shapes the worked example compiles on this host to show the planner's error.
VALIDATION = (
  dict(d=256, n=4096, k=8, batch=1024, data_shards=1, model_shards=1, path="sparse", k_aux=-1),
  dict(d=256, n=4096, k=8, batch=1024, data_shards=1, model_shards=1, path="dense", k_aux=-1),
  dict(d=128, n=8192, k=16, batch=1024, data_shards=2, model_shards=4, path="sparse", k_aux=-1),
  dict(d=64, n=4096, k=8, batch=512, data_shards=8, model_shards=1, path="sparse", k_aux=-1),
  dict(d=128, n=8192, k=16, batch=1024, data_shards=2, model_shards=4, path="dense", k_aux=-1),
)


SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def _gib(b: int) -> str:
  return f"{b / GIB:.1f}"


def fit_rows(chip: str, memory_gib: float, **shape) -> list[dict]:
  """Per slice size and dtype pair: the best mesh at the full batch, and the largest batch (by
  halving) with the smallest model split that fits."""
  rows = []
  for devices in SLICES:
    for param_dtype, dtype in DTYPES:
      kw = dict(dtype=dtype, param_dtype=param_dtype)
      full = min(
        (
          memory.plan(**shape, data_shards=dd, model_shards=m, **kw)
          for dd, m in memory.mesh_splits(devices)
        ),
        key=lambda p: p.total,
      )
      fit = memory.suggest_mesh(
        **shape, devices=devices, device_memory_bytes=int(memory_gib * GIB), min_batch=256, **kw
      )
      rows.append(
        {
          "chip": chip,
          "chips": devices,
          "params / acts": f"{SHORT[param_dtype]} / {SHORT[dtype]}",
          f"least GiB/chip at B={shape['batch']} (mesh)": (
            f"{_gib(full.total)} ({full.data_shards}x{full.model_shards})"
          ),
          "largest batch that fits": fit.batch if fit else "none ≥ 256",
          "mesh data x model": f"{fit.data_shards}x{fit.model_shards}" if fit else "",
          "GiB/chip": _gib(fit.total) if fit else "",
        }
      )
  return rows


def chips_for_full_batch(memory_gib: float, **kw) -> memory.MemoryPlan | None:
  """The smallest power-of-two slice (up to 8192 chips) that trains the full batch."""
  for devices in (2**i for i in range(3, 14)):
    gib = int(memory_gib * GIB)
    fit = memory.suggest_mesh(
      **WORKED, devices=devices, device_memory_bytes=gib, min_batch=WORKED["batch"], **kw
    )
    if fit:
      return fit
  return None


def min_model_split(memory_gib: float, param_dtype: str = "float32") -> int:
  """The smallest power-of-two model split whose parameters, gradients and Adam state fit."""
  m = 1
  while True:
    p = memory.plan(**WORKED, model_shards=m, param_dtype=param_dtype)
    if (p.parameters * 4) * (1 + p.headroom) <= memory_gib * GIB:
      return m
    m *= 2


def levers(devices: int, memory_gib: float) -> list[dict]:
  """What each change does to the full-batch worked example: the best mesh of `devices` chips."""
  changes = {
    "as planned (k_aux = d/2 = 2048)": {},
    "k_aux = 256 (OpenAI reference trainer)": {"k_aux": 256},
    "AuxK off": {"k_aux": 0},
    "bfloat16 activations": {"dtype": "bfloat16"},
    "bfloat16 params and Adam": {"param_dtype": "bfloat16"},
    "dense path": {"path": "dense"},
    "bias add not fused (as on XLA:CPU)": {"fused_bias": False},
  }
  rows = []
  for name, change in changes.items():
    best = min(
      (
        memory.plan(
          **WORKED,
          data_shards=data,
          model_shards=model,
          device_memory_bytes=int(memory_gib * GIB),
          **change,
        )
        for data, model in memory.mesh_splits(devices)
      ),
      key=lambda p: p.total,
    )
    rows.append(
      {
        "change": name,
        "least GiB/chip": _gib(best.total),
        "mesh": f"{best.data_shards}x{best.model_shards}",
        "fits": "yes" if best.fits else "no",
      }
    )
  return rows


def validation_rows() -> list[dict]:
  """The planner (fused_bias=False, as XLA:CPU compiles) against the compiled step here."""
  rows = []
  for case in VALIDATION:
    if case["data_shards"] * case["model_shards"] > jax.device_count():
      continue
    c = dict(case)
    d = c.pop("d")
    config = memory.step_config(
      n=c["n"],
      k=c["k"],
      batch=c["batch"],
      data_shards=c["data_shards"],
      model_shards=c["model_shards"],
      path=c["path"],
      k_aux=c["k_aux"],
    )
    measured = memory.compiled_step_memory(config, d)
    planned = memory.plan(d, **c, fused_bias=False)
    rows.append(
      {
        "d, n, k, batch": f"{d}, {c['n']}, {c['k']}, {c['batch']}",
        "mesh": f"{c['data_shards']}x{c['model_shards']}",
        "path": c["path"],
        "compiled MiB": f"{measured.peak / 2**20:.1f}",
        "planned MiB": f"{planned.estimate / 2**20:.1f}",
        "planned / compiled": f"{planned.estimate / measured.peak:.2f}",
      }
    )
  return rows


def worked_example() -> str:
  v5p = CHIPS["TPU v5p"]
  recommended = memory.suggest_mesh(**WORKED, devices=256, device_memory_bytes=v5p * GIB)
  at_full = min(
    (
      memory.plan(**WORKED, data_shards=data, model_shards=model, device_memory_bytes=v5p * GIB)
      for data, model in memory.mesh_splits(256)
    ),
    key=lambda p: p.total,
  )
  full_mesh = f"{at_full.data_shards}×{at_full.model_shards}"
  need = chips_for_full_batch(v5p)
  need_no_aux = chips_for_full_batch(v5p, k_aux=0)
  fits = [r for chip, gib in CHIPS.items() for r in fit_rows(chip, gib, **WORKED)]
  lines = [
    "# Memory plan: a 16M-latent TopK SAE on TPU slices",
    "",
    "Generated by `XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu "
    "python -m experiments.bench.memory_plan --worked_example` (`jaxsae.bench.memory.plan`; the "
    "model and its terms are in that module's docstring). Every figure is bytes per chip.",
    "",
    "## Setting and assumptions",
    "",
    "- SAE: TopK, d = 4096, n = 2^24 = 16,777,216 latents, k = 32, AuxK at the library default "
    "k_aux = d/2 = 2048, sparse training path (`sae.topk_path`), Adam (μ, ν in the parameter "
    "dtype), one SAE. d = 4096 is our choice (GPT-4's width is not published); the TopK paper's "
    "16M-latent SAE was trained on GPT-4 activations for 40B tokens.",
    "- Batch: 131072 tokens, the default of OpenAI's reference trainer "
    "(`sparse_autoencoder/train.py`, `bs=131072`, also k=32, auxk=256).",
    "- HBM per chip: TPU v5p 95 GiB, TPU v4 32 GiB (Google Cloud TPU documentation).",
    f"- Headroom: the estimate + {memory.HEADROOM:.0%} must fit (fragmentation, runtime "
    "reservations, what the model does not count).",
    "- The encoder bias add is assumed fused into the matmul on TPU (XLA output fusion); "
    "XLA:CPU keeps it apart, one more B×n_l float32 buffer (see the levers table).",
    "- bf16 columns are what-ifs: parameters, gradients and Adam stored in bfloat16, and "
    "pre-activations stored in bfloat16 (ranked through a float32 copy). The trainer today "
    "keeps float32 parameters, and its mixed precision (`sae.compute_dtype`) multiplies "
    "bfloat16 operands into a float32 pre, which plans as f32 / f32.",
    "- The mesh is (data, model): the batch split over data, the latents over model; "
    "parameters and Adam state are split over model only, replicated over data.",
    "",
    "## Parameters alone",
    "",
    f"W_enc and W_dec are 2·d·n = {2 * 4096 * 2**24:,} floats: "
    f"{2 * 4096 * 2**24 * 4 / GIB:.0f} GiB in float32, and with their gradients and Adam's μ, ν "
    f"{4 * 2 * 4096 * 2**24 * 4 / GIB:.0f} GiB. Nothing fits on one chip: on v5p the latents "
    f"must be split at least {min_model_split(v5p)} ways before any activation is counted "
    f"(float32; {min_model_split(v5p, 'bfloat16')} with bfloat16 parameters and Adam).",
    "",
    "The pre-activation matrix B × n is the other giant: 131072 × 2^24 × 4 bytes = "
    f"{131072 * 2**24 * 4 / 2**40:.0f} TiB per step in float32, split over every chip of the "
    "slice (rows over data, latents over model), and AuxK keeps a second, masked copy.",
    "",
    "## Which configurations fit",
    "",
    "For each slice, the least memory per chip any mesh reaches at the full 131072-token batch, "
    "and the largest batch (halving from 131072) that fits, with the smallest model split that "
    "fits it.",
    "",
    tables.markdown(fits),
    "",
    "## Recommendation",
    "",
  ]
  if recommended:
    lines += [
      f"On a 256-chip v5p slice: mesh data={recommended.data_shards} × "
      f"model={recommended.model_shards} at batch {recommended.batch} "
      f"({_gib(recommended.total)} GiB of {v5p} per chip). The full 131072-token batch needs "
      f"{_gib(at_full.total)} GiB per chip at the best split ({full_mesh}), so train at "
      f"{recommended.batch} tokens per step, or reach 131072 with "
      f"{WORKED['batch'] // recommended.batch} steps of gradient accumulation (not implemented "
      "in the trainer).",
      "",
    ]
  if need:
    lines += [
      f"The smallest power-of-two v5p slice that takes the full batch in one step: {need.devices} "
      f"chips, mesh {need.data_shards}×{need.model_shards}, {_gib(need.total)} GiB per chip"
      + (
        f". Without AuxK: {need_no_aux.devices} chips, mesh {need_no_aux.data_shards}×"
        f"{need_no_aux.model_shards}, {_gib(need_no_aux.total)} GiB per chip."
        if need_no_aux
        else "."
      ),
      "",
    ]
  v4 = [r for r in fits if r["chip"] == "TPU v4" and r["mesh data x model"]]
  bf16 = memory.suggest_mesh(**WORKED, devices=256, device_memory_bytes=v5p * GIB, dtype="bfloat16")
  if bf16:
    lines += [
      f"With bfloat16 activations (float32 parameters and Adam): batch {bf16.batch} on "
      f"{bf16.data_shards}×{bf16.model_shards} ({_gib(bf16.total)} GiB per chip).",
      "",
    ]
  lines += [
    f"v4 (32 GiB) fits from {min(r['chips'] for r in v4)} chips, and only batches of "
    f"{min(r['largest batch that fits'] for r in v4)}–"
    f"{max(r['largest batch that fits'] for r in v4)} tokens: not a sensible target at this "
    "size.",
    "",
    "Breakdown of the recommended configuration:",
    "",
    "```",
    (recommended or at_full).explain(),
    "```",
    "",
    "## Levers, at 256 v5p chips, batch 131072",
    "",
    "Each change alone, at the best mesh of 256 chips for it:",
    "",
    tables.markdown(levers(256, v5p)),
    "",
    "AuxK costs most at this scale: its masked copy of the pre-activations (one more "
    "B×n_l array) and the exact top-k's candidate gather, B×(M·k_aux) values and indices per "
    "device, which grows with the model split M.",
    "",
    "## Planner against the compiled step",
    "",
    "The planner (with `fused_bias=False`, as XLA:CPU compiles) against "
    "`Compiled.memory_analysis()` of the real training step on "
    f"{jax.device_count()} {jax.devices()[0].platform.upper()} devices "
    "(argument + output + temp − alias, per device):",
    "",
    tables.markdown(validation_rows()),
    "",
  ]
  return "\n".join(lines)


def main(argv):
  del argv
  if _WORKED.value:
    path = pathlib.Path(_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(worked_example())
    print(f"wrote {path}")
    return
  kw = dict(
    dtype=_DTYPE.value,
    param_dtype=_PARAM_DTYPE.value,
    architecture=_ARCHITECTURE.value,
    path=_PATH.value,
    k_aux=_K_AUX.value,
    fused_bias=_FUSED_BIAS.value,
    headroom=_HEADROOM.value,
  )
  shape = dict(d=_D.value, n=_N.value, k=_K.value, batch=_BATCH.value)
  device_memory = int(_MEMORY.value * GIB)
  if _DEVICES.value > 0:
    p = memory.suggest_mesh(
      **shape, devices=_DEVICES.value, device_memory_bytes=device_memory, **kw
    )
    print(p.explain() if p else f"nothing fits on {_DEVICES.value} devices at any batch")
    return
  p = memory.plan(
    **shape,
    data_shards=_DATA.value,
    model_shards=_MODEL.value,
    device_memory_bytes=device_memory,
    **kw,
  )
  print(p.explain())
  if _COMPILE.value:
    config = memory.step_config(
      n=p.n,
      k=p.k,
      batch=p.batch,
      data_shards=p.data_shards,
      model_shards=p.model_shards,
      architecture=p.architecture,
      path=p.path,
      k_aux=_K_AUX.value,
    )
    m = memory.compiled_step_memory(config, p.d)
    fields = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in dataclasses.asdict(m).items())
    print(f"compiled on {jax.devices()[0].platform}: {fields}")
    print(f"  peak {m.peak / 2**20:.1f} MiB; planned / compiled = {p.estimate / m.peak:.2f}")


if __name__ == "__main__":
  cli.run(main)
