"""Which Gemma 3 sizes (270M to 27B) harvest, and train an SAE beside the model, on which meshes:
the planned memory per device (`jaxsae.bench.model_memory`) on 1 to 8 model ways of 16 to 80 GiB
devices, with the harvest planner checked against the compiled forward of tiny Gemma-3-shaped
models and of 270M itself on this host.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m experiments.bench.gemma3_memory   # writes docs/bench/gemma3_memory.md
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
from absl import flags

from experiments.bench.memory_plan import SHORT, _gib
from jaxsae import cli, tables
from jaxsae.bench import gemma3_sizes, memory, model_memory
from jaxsae.bench.memory import GIB

_GEMMA3_OUT = flags.DEFINE_string(
  "gemma3_out", "docs/bench/gemma3_memory.md", "Where the Gemma 3 report is written."
)

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
  cfg = gemma3_sizes.gemma3_config("270m", dtype)
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
  cfg = gemma3_sizes.gemma3_config(size, dtype)
  hook = f"blocks.{cfg.n_layers // 2}.resid_post"
  shape = {**GEMMA3_HARVEST, **(harvest or {})}
  if task == "harvest":
    return model_memory.plan_harvest(cfg, hook, **shape, model_shards=ways, **kw)
  sae = {**GEMMA3_SAE, **(sae or {})}
  return model_memory.plan_harvest_and_train(cfg, hook, **shape, **sae, model_shards=ways, **kw)


def gemma3_rows(dtype: str = "bfloat16", sizes=gemma3_sizes.GEMMA3_SIZES) -> list[dict]:
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


def gemma3_fewest_ways(dtype: str = "bfloat16", sizes=gemma3_sizes.GEMMA3_SIZES) -> list[dict]:
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
  for size in gemma3_sizes.GEMMA3_SIZES:
    c = gemma3_sizes.gemma3_config(size)
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
    "python -m experiments.bench.gemma3_memory` (`jaxsae.bench.model_memory`; the "
    "harvest's model and its terms are in that module's docstring, the SAE's in "
    "`jaxsae.bench.memory`'s). Every figure is bytes per device, with the planners' "
    f"{memory.HEADROOM:.0%} headroom included; a configuration fits when that total is at most "
    "the device's memory.",
    "",
    "## Setting and assumptions",
    "",
    "- Models: the text decoders of google/gemma-3-{270m,1b,4b,12b,27b}-pt as their Hugging "
    "Face config.json describes them (`gemma3_sizes.gemma3_config`), weights in bfloat16, the "
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
  path = pathlib.Path(_GEMMA3_OUT.value)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(gemma3_report())
  print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
