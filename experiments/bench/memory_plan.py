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

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m experiments.bench.memory_plan --gemma3   # writes docs/bench/gemma3_memory.md

plans which Gemma 3 sizes (270M to 27B) harvest, and train an SAE beside the model, on 1 to 8
model ways of 16 to 80 GiB devices (`jaxsae.bench.model_memory`), and compiles the harvest's
forward of tiny Gemma-3-shaped models and of 270M itself here to show that planner's error.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
from absl import flags

from jaxsae import cli, tables
from jaxsae.bench import memory, model_memory
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
_GEMMA3 = flags.DEFINE_boolean("gemma3", False, "Write the Gemma 3 harvest (+ SAE) report.")
_GEMMA3_OUT = flags.DEFINE_string(
  "gemma3_out", "docs/bench/gemma3_memory.md", "Where --gemma3 writes."
)

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


# ---- Gemma 3: harvest, and an SAE beside the model ----------------------------------------------
# Memory per device (nominal GiB) and devices that have it.
GEMMA3_MEMORY = {16: "T4, TPU v5e", 24: "L4, A10", 40: "A100 40GB", 80: "A100 / H100 80GB"}
GEMMA3_WAYS = (1, 2, 4, 8)
# The harvest's default batch_size (32 windows) of Gemma Scope's 1024-token contexts; an SAE of a
# Gemma Scope width (2^16 latents), k = 64, 4096 tokens per step.
GEMMA3_HARVEST = dict(batch=32, seq_len=1024)
GEMMA3_SAE = dict(n=65536, k=64, sae_batch=4096)
GEMMA3_TASKS = ("harvest", "harvest + SAE")
# Compiled here to show the harvest planner's error: (model, hook, batch, seq_len, data, model
# ways, dtype). "tiny": Gemma 3 270M's architecture with d_model 256, 6 layers, d_mlp 1024.
GEMMA3_VALIDATION = (
  ("tiny", "blocks.1.resid_post", 8, 512, 1, 1, "float32"),
  ("tiny", "blocks.5.resid_post", 8, 256, 2, 4, "float32"),
  ("tiny", "blocks.5.resid_post", 8, 256, 8, 1, "float32"),
  ("tiny", "blocks.3.resid_post", 8, 256, 1, 8, "float32"),
  ("tiny, 8 heads / 2 KV", "blocks.3.resid_post", 4, 512, 2, 4, "float32"),
  ("tiny, 8 heads / 2 KV", "blocks.3.mlp.post", 8, 256, 1, 2, "float32"),
  ("tiny", "blocks.5.resid_post", 8, 256, 2, 4, "bfloat16"),
  ("270m", "blocks.17.resid_post", 2, 1024, 1, 1, "float32"),
  ("270m", "blocks.5.resid_post", 2, 1024, 1, 8, "bfloat16"),
  ("270m", "blocks.5.resid_post", 4, 512, 2, 4, "bfloat16"),
)


def _validation_model(name: str, dtype: str):
  """Gemma 3 270M, or its architecture at toy size ("tiny")."""
  cfg = model_memory.gemma3_config("270m", dtype)
  if name == "270m":
    return cfg
  heads = dict(n_heads=8, n_kv_heads=2) if "8 heads" in name else {}
  layer_types = ("sliding",) * 5 + ("full",)
  return dataclasses.replace(
    cfg, vocab_size=4096, d_model=256, n_layers=6, d_head=64, d_mlp=1024, max_len=1024,
    sliding_window=64, layer_types=layer_types, **heads,
  )  # fmt: skip


def gemma3_plan(
  size: str,
  task: str,
  ways: int,
  dtype: str = "bfloat16",
  *,
  harvest: dict | None = None,
  sae: dict | None = None,
  **kw,
):
  """The plan of `task` ("harvest" or "harvest + SAE") for Gemma 3 `size` at its middle layer's
  resid_post on `ways` model ways (data = 1). `harvest` and `sae` override GEMMA3_HARVEST and
  GEMMA3_SAE; `kw` goes to the planner (keep_later_blocks, sae_kwargs, ...)."""
  cfg = model_memory.gemma3_config(size, dtype)
  hook = f"blocks.{cfg.n_layers // 2}.resid_post"
  shape = {**GEMMA3_HARVEST, **(harvest or {})}
  if task == "harvest":
    return model_memory.plan_harvest(cfg, hook, **shape, model_shards=ways, **kw)
  sae = {**GEMMA3_SAE, **(sae or {})}
  return model_memory.plan_harvest_and_train(cfg, hook, **shape, **sae, model_shards=ways, **kw)


def gemma3_rows(dtype: str = "bfloat16", sizes=model_memory.GEMMA3_SIZES) -> list[dict]:
  """Size × task × model ways: GiB per device and whether it fits each device size."""
  rows = []
  for size in sizes:
    for task in GEMMA3_TASKS:
      for ways in GEMMA3_WAYS:
        total = gemma3_plan(size, task, ways, dtype).total
        row = {"size": size.upper(), "task": task, "model ways": ways, "GiB/device": _gib(total)}
        row |= {f"{g} GiB": "yes" if total <= g * GIB else "no" for g in GEMMA3_MEMORY}
        rows.append(row)
  return rows


def gemma3_fewest_ways(dtype: str = "bfloat16", sizes=model_memory.GEMMA3_SIZES) -> list[dict]:
  """Per size and task, the fewest model ways (of GEMMA3_WAYS) that fit each device size."""
  rows = []
  for size in sizes:
    for task in GEMMA3_TASKS:
      totals = {ways: gemma3_plan(size, task, ways, dtype).total for ways in GEMMA3_WAYS}
      row = {"size": size.upper(), "task": task}
      for g in GEMMA3_MEMORY:
        fit = [ways for ways, total in totals.items() if total <= g * GIB]
        row[f"{g} GiB"] = f"{fit[0]} ({_gib(totals[fit[0]])} GiB)" if fit else "more than 8"
      rows.append(row)
  return rows


# Each lever: (weights dtype, gemma3_plan keywords).
GEMMA3_LEVERS = {
  "as planned": ("bfloat16", {}),
  "blocks after the hook not loaded": ("bfloat16", {"keep_later_blocks": False}),
  "8 windows per forward": ("bfloat16", {"harvest": {"batch": 8}}),
  "2048-token windows": ("bfloat16", {"harvest": {"seq_len": 2048}}),
  "float32 weights": ("float32", {}),
  "SAE of 2^18 latents (Gemma Scope's 262K)": ("bfloat16", {"sae": {"n": 2**18}}),
  "SAE without AuxK": ("bfloat16", {"sae_kwargs": {"k_aux": 0}}),
}


def gemma3_levers(sizes=("12b", "27b")) -> list[dict]:
  """What each change alone does to harvest + SAE on one device."""
  rows = []
  for name, (dtype, kw) in GEMMA3_LEVERS.items():
    row = {"change": name}
    for size in sizes:
      row[f"{size.upper()} GiB"] = _gib(gemma3_plan(size, "harvest + SAE", 1, dtype, **kw).total)
    rows.append(row)
  return rows


def gemma3_validation_rows() -> list[dict]:
  """The harvest planner (xla_cpu=True) against the compiled forward on this host's devices,
  with XLA:CPU's defaults and with its YNNPACK fusions off (`model_memory.XLA_CPU_OPTIONS`)."""
  rows = []
  for name, hook, batch, seq_len, data, ways, dtype in GEMMA3_VALIDATION:
    if data * ways > jax.device_count():
      continue
    args = (_validation_model(name, dtype), hook, batch, seq_len, data, ways)
    default = model_memory.compiled_harvest_memory(*args)
    no_ynn = model_memory.compiled_harvest_memory(
      *args, compiler_options=model_memory.XLA_CPU_OPTIONS
    )
    planned = model_memory.plan_harvest(*args, keep_later_blocks=False, xla_cpu=True)
    rows.append(
      {
        "model": name.upper() if name == "270m" else name,
        "hook": hook,
        "tokens": f"{batch}x{seq_len}",
        "mesh": f"{data}x{ways}",
        "params": SHORT[dtype],
        "compiled MiB": f"{default.peak / 2**20:.1f}",
        "compiled MiB, no YNN": f"{no_ynn.peak / 2**20:.1f}",
        "planned MiB": f"{planned.estimate / 2**20:.1f}",
        "planned / compiled": f"{planned.estimate / default.peak:.2f}",
        "planned / compiled, no YNN": f"{planned.estimate / no_ynn.peak:.2f}",
      }
    )
  return rows


def _gemma3_configs() -> list[dict]:
  rows = []
  for size in model_memory.GEMMA3_SIZES:
    c = model_memory.gemma3_config(size)
    count = sum(elements for elements, _ in model_memory.parameter_shards(c).values())
    rows.append(
      {
        "size": size.upper(),
        "d_model": c.d_model,
        "layers": c.n_layers,
        "heads / KV heads": f"{c.n_heads} / {c.kv_heads}",
        "d_head": c.d_head,
        "d_mlp": c.d_mlp,
        "vocab": c.vocab_size,
        "window": c.sliding_window,
        "parameters": f"{count:,}",
        "bf16 GiB": _gib(model_memory.parameter_bytes(c)),
      }
    )
  return rows


def gemma3_report() -> str:
  memories = ", ".join(f"{g} GiB ({what})" for g, what in GEMMA3_MEMORY.items())
  big = gemma3_plan("27b", "harvest + SAE", 1)
  forward = gemma3_plan("27b", "harvest", 1)
  lines = [
    "# Memory plan: harvesting Gemma 3, and training an SAE beside it",
    "",
    "Generated by `XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu "
    "python -m experiments.bench.memory_plan --gemma3` (`jaxsae.bench.model_memory`; the "
    "harvest's model and its terms are in that module's docstring, the SAE's in "
    "`jaxsae.bench.memory`'s). Every figure is bytes per device, with the planners' "
    f"{memory.HEADROOM:.0%} headroom included; a configuration fits when that total is at most "
    "the device's memory.",
    "",
    "## Setting and assumptions",
    "",
    "- Models: the text decoders of google/gemma-3-{270m,1b,4b,12b,27b}-pt as their Hugging "
    "Face config.json describes them (`model_memory.gemma3_config`), weights in bfloat16, the "
    "checkpoints' dtype (`pretrained.load` picks it above 2B parameters and float32 below; "
    "float32 has its own table below).",
    f"- Harvest: {GEMMA3_HARVEST['batch']} windows of {GEMMA3_HARVEST['seq_len']} tokens per "
    "forward (`harvest`'s default batch_size; Gemma Scope's 1024-token contexts), capturing "
    "the middle layer's resid_post in float32. The forward stops after that block "
    "(`stop_early`), but every block is held: `pretrained.load` and `LanguageModel.on_mesh` "
    "place them all (the levers show a loader that does not).",
    f"- SAE beside the model: TopK, n = {GEMMA3_SAE['n']} latents (a Gemma Scope width), "
    f"k = {GEMMA3_SAE['k']}, {GEMMA3_SAE['sae_batch']} tokens per step, d = d_model, AuxK at "
    "k_aux = d/2, sparse path, float32 parameters and Adam (`jaxsae.bench.memory.plan`), its "
    "latents split over the same model ways. Harvest forwards and training steps run one "
    "after the other on the same devices: both states and the harvested rows are held, the "
    "larger working set counts once.",
    "- Meshes: 1, 2, 4 or 8 model ways, data = 1. Query heads, KV heads, MLP neurons and the "
    "vocabulary are split where the ways divide them and replicated where not "
    "(`sharding.fit_spec`): 270M and 1B have 4 query heads and 1 KV head, so on 8 ways every "
    "device computes every head's attention, and 8 ways can cost more than 4. Further devices "
    "as data ways hold the same parameter shard and split the windows: they only lower these "
    "figures.",
    f"- Devices: {memories}. On GPUs JAX's default pool is 75% of the memory "
    "(`XLA_PYTHON_CLIENT_MEM_FRACTION`): raise it, or read these columns as 0.75 × memory.",
    "",
    "The five sizes (parameters counted from the model's own abstract parameters; bf16 GiB: "
    "all of them in bfloat16):",
    "",
    tables.markdown(_gemma3_configs()),
    "",
    "## Fewest model ways that fit",
    "",
    "Per device size, the fewest model ways (of 1, 2, 4, 8) on which each size harvests, or "
    "harvests and trains the SAE beside it, and the GiB per device there (bfloat16 weights):",
    "",
    tables.markdown(gemma3_fewest_ways()),
    "",
    "## Every size, mesh and device",
    "",
    tables.markdown(gemma3_rows()),
    "",
    "## Levers",
    "",
    "Each change alone, harvest + SAE on one device:",
    "",
    tables.markdown(gemma3_levers()),
    "",
    f"The parameters dominate. 27B's forward at 32 × 1024 tokens on one device works in "
    f"{_gib(forward.working)} GiB, {_gib(forward.attention)} of them one layer's attention "
    "(32 heads' 1024 × 1024 float32 scores and pattern for each window, and the pattern's "
    "bfloat16 copy), against "
    f"{_gib(forward.parameters)} GiB of weights; the SAE holds {_gib(big.sae.persistent)} GiB "
    "(parameters, Adam's μ and ν, its batch) and its step works in "
    f"{_gib(big.sae.working)} GiB.",
    "",
    "## float32 weights (the loader's default for 270M and 1B)",
    "",
    tables.markdown(gemma3_fewest_ways("float32", ("270m", "1b"))),
    "",
    "## Breakdown: 27B, harvest + SAE on one 80 GiB device",
    "",
    "```",
    big.explain(),
    "",
    forward.explain(),
    "```",
    "",
    "## Planner against the compiled forward",
    "",
    "The harvest planner (`keep_later_blocks=False`, `xla_cpu=True`: the parameters the "
    "compiled forward reads, and XLA:CPU's float32 copies of bfloat16 matrices) against "
    "`Compiled.memory_analysis()` of the harvest's jitted forward (`harvest.capture_fn`) on "
    f"{jax.device_count()} {jax.devices()[0].platform.upper()} devices, lowered on abstract "
    "parameters carrying `LanguageModel.on_mesh`'s shardings (argument + output + temp − alias, "
    'per device). "no YNN": compiled with XLA:CPU\'s YNNPACK fusions off '
    "(`model_memory.XLA_CPU_OPTIONS`); with them, from some sizes on, XLA:CPU materializes the "
    "tanh-GELU's constants as four tokens × d_mlp float32 arrays live for the whole program, "
    "which no accelerator does. tests/test_model_memory.py holds the no-YNN ratio within ±25% "
    "(and the compiled arguments equal to the planned parameter shard and tokens, to the byte, "
    "wherever every parameter of the blocks run is read).",
    "",
    tables.markdown(gemma3_validation_rows()),
    "",
  ]
  return "\n".join(lines)


def main(argv):
  del argv
  if _GEMMA3.value:
    path = pathlib.Path(_GEMMA3_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(gemma3_report())
    print(f"wrote {path}")
    return
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
