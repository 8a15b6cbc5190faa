"""Per-layer transcoders against a cross-layer transcoder, on the shipped byte model (all 4 MLPs)
and on Gemma 3 270M (all 18, streamed): their FVU-vs-L0 frontiers and replacement models,
attribution graphs of circuit tasks (beside the pruned weight-sparse circuits of the same tasks on
the byte model), and each training step beside sparsify's per-layer transcoders.

  python -m experiments.attribution_study --workdir=runs/attribution_study \
      --publish=docs/attribution --cpu_devices=1

(--cpu_devices=1: how the page was made, one XLA device on both cores. Two devices run too; they
stalled Gemma's first step in XLA's all-reduce only while the streaming reader ran 16 forwards
beside the step, which `activations.streaming` no longer does.)

The dictionaries are the CLT job's (`jaxsae/clt_job.py`, JumpReLU, trained streamed from the
model; Gemma's windows and sizes are experiments/configs/clt_gemma3.py's): per-layer transcoders
(`cross_layer=False`) and a CLT at each target total L0 of the model's plan (`PLANS`; --targets,
--steps, --features_per_layer and --pairs override every model's), all trained by one sweep from
the same forward passes. Graphs: the first pairs of each task of --tasks from the model's
held-out text (`jaxsae.sparse.task_suite`, with the model's own tokenizer), both prompts of a
pair, pruned at circuit-tracer's thresholds; the weight-sparse circuits are the rows of
--circuits (docs/circuits/results.csv, `experiments.prune`); the device memory of a graph at
circuit-tracer's scale, compiled for the CLT. Writes RESULTS.md, frontier.csv, layers.csv,
graphs.csv, speed.csv, memory.csv and figures/frontier.png to the workdir (and --publish). The
sweep (`dictionaries/`) and each dictionary's graphs (`graphs/<kind>_l0_<target>/`) resume from
their folders (the byte model's in the workdir, others' in <workdir>/<model>).
"""

import csv
import dataclasses
import json
import pathlib
import shutil
import time
from collections.abc import Callable

import ml_collections
import numpy as np
from absl import flags

from experiments.configs import clt, clt_gemma3
from jaxsae import cli, clt_job, tables
from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution import prune as prune_lib
from jaxsae.attribution.memory import graph_memory
from jaxsae.bench import harness
from jaxsae.models import pretrained
from jaxsae.sae import zoo
from jaxsae.sparse.task_suite import build_suite
from jaxsae.text import model_corpus


@dataclasses.dataclass(frozen=True)
class Plan:
  """One model's part of the study."""

  title: str
  config: Callable[[], ml_collections.ConfigDict]  # The CLT job's config for this model.
  targets: tuple[int, ...]  # Target total L0s (over every layer) of each kind.
  steps: int
  features_per_layer: int
  pairs: int  # Contrast pairs per task (two prompts each).
  graphs: bool = True  # Whether the task prompts' attribution graphs are computed.


PLANS = {
  "default": Plan("The shipped byte model", clt.get_config, (16, 48), 1500, 512, 4),
  # 400 steps of 256 rows (102k tokens), one sweep for all four dictionaries: 2 CPU cores run
  # Gemma's 18 layers at ~430 rows/s (most of a per-layer set's step); the CLTs' 28M-parameter
  # decoders take most of the rest. A graph of a prompt of ≤ 20 Gemma tokens (~500–900 feature
  # nodes at total L0 ~55) takes 13–35 s.
  "gemma-3-270m": Plan("Gemma 3 270M", clt_gemma3.get_config, (32, 96), 400, 256, 2),
}

_WORKDIR = flags.DEFINE_string("workdir", "runs/attribution_study", "Where results go.")
_PUBLISH = flags.DEFINE_string("publish", None, "Also copy the page and tables here.")
_MODELS = flags.DEFINE_list("models", list(PLANS), f"Models of the study, of {list(PLANS)}.")
_TARGETS = flags.DEFINE_list("targets", None, "Target total L0s (default: each model's plan).")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (default: each model's plan).")
_FEATURES = flags.DEFINE_integer("features_per_layer", None, "Features of each layer (ditto).")
_TASKS = flags.DEFINE_list(
  "tasks", ["closing_quote", "bracket_depth", "closing_bracket_type"], "Circuit tasks."
)
_PAIRS = flags.DEFINE_integer("pairs", None, "Contrast pairs per task (default: the plan's).")
_GRAPHS = flags.DEFINE_bool("graphs", None, "Compute the task graphs (default: the plan's).")
_MAX_LEN = flags.DEFINE_integer("max_len", 64, "Longest prompt, in tokens (the end is kept).")
_WINDOWS = flags.DEFINE_list(
  "windows", [], "TRAIN,EVAL: the job's training and held-out windows (default: its own)."
)
_REPEATS = flags.DEFINE_integer("bench_repeats", 10, "Timed steps per speed measurement.")
_CIRCUITS = flags.DEFINE_string(
  "circuits", "docs/circuits/results.csv", "Pruned weight-sparse circuits to set beside."
)
_CIRCUIT_MODELS = ("sparse", "dense")
KINDS = {"per-layer": False, "cross-layer": True}
# Targets pulled back per batch by every graph here (`graph.compute`'s batch_size), and the graph
# whose device memory is reported: circuit-tracer's scale, 7,500 feature nodes over 64 tokens.
_MEMORY_TOKENS, _MEMORY_FEATURES, _GRAPH_BATCH = 64, 7500, 64


def plan_for(model: str) -> Plan:
  """The model's plan with the flags that override every model's applied."""
  if model not in PLANS:
    raise ValueError(f"--models names {model!r}; the study has plans for {sorted(PLANS)}")
  p = PLANS[model]
  return dataclasses.replace(
    p,
    targets=tuple(int(t) for t in _TARGETS.value) if _TARGETS.value else p.targets,
    steps=_STEPS.value or p.steps,
    features_per_layer=_FEATURES.value or p.features_per_layer,
    pairs=_PAIRS.value or p.pairs,
    graphs=p.graphs if _GRAPHS.value is None else _GRAPHS.value,
  )


def job_config(plan: Plan) -> ml_collections.ConfigDict:
  """The CLT job's config for a model's four dictionaries: per-layer transcoders and a CLT at
  each target, trained by one sweep from the same forward passes (`clt_job.run`)."""
  c = plan.config()
  c.clt.prompts = ()
  c.clt.features_per_layer = plan.features_per_layer
  c.train.steps = plan.steps
  c.sweep.architecture, c.sweep.k = tuple(KINDS), plan.targets
  c.variants = {
    kind: {"architecture": c.sae.architecture, "cross_layer": cross}
    for kind, cross in KINDS.items()
  }
  if _WINDOWS.value:
    c.harvest.train_windows, c.harvest.eval_windows = (int(w) for w in _WINDOWS.value)
  return c


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, dict]:
  """The model's dictionaries and their replacement-model reports, by (kind, target) (cached in
  workdir/results.json)."""
  done = workdir / "results.json"
  if not done.exists():
    reports = clt_job.run(config, workdir)
    done.write_text(json.dumps(list(reports.values()), indent=2, default=float))
  reports = json.loads(done.read_text())
  return {(kind_of(r), r["target_l0"]): r for r in reports}


def kind_of(report: dict) -> str:
  return next(kind for kind, cross in KINDS.items() if cross == report["cross_layer"])


def frontier_row(model: str, kind: str, target: int, out: dict) -> dict:
  fvus = [r["fvu"] for r in out["layers"]]
  return {
    "model": model, "kind": kind, "target_l0": target,
    "total_l0": sum(r["l0"] for r in out["layers"]), "mean_fvu": float(np.mean(fvus)),
    "best_layer_fvu": min(fvus), "worst_layer_fvu": max(fvus),
    "ce_original": out["ce_original"], "ce_replacement": out["ce_replacement"],
    "delta_ce": out["layers"][0]["delta_ce"], "kl": out["layers"][0]["kl"],
    "eval_s": out["eval_s"],
  }  # fmt: skip


def layer_rows(model: str, kind: str, target: int, out: dict) -> list[dict]:
  return [
    {"model": model, "kind": kind, "target_l0": target, "layer": r["layer"], "l0": r["l0"],
     "fvu": r["fvu"]}
    for r in out["layers"]
  ]  # fmt: skip


def task_prompts(lm, pairs: int) -> dict[str, list[np.ndarray]]:
  docs = model_corpus.for_model(lm).read("validation")
  suite = build_suite(docs, lm.tokenizer, pairs, _MAX_LEN.value, controls=False, names=_TASKS.value)
  return {
    name: [ex.prompt_ids for pair in task.pairs for ex in (pair.a, pair.b)]
    for name, task in suite.items()
  }


def graph_rows(lm, model, kind, target, out, prompts, skip_first, workdir) -> list[dict]:
  """Per task, the mean over its prompts' graphs (cached in workdir/graphs.json)."""
  done = workdir / "graphs.json"
  if done.exists():
    return json.loads(done.read_text())
  dictionaries = zoo.load_replacement(out["dictionaries"])
  rows = []
  for task, prompt_list in prompts.items():
    start, found = time.perf_counter(), []
    for tokens in prompt_list:
      g = graph_lib.compute(
        lm, dictionaries, tokens, batch_size=_GRAPH_BATCH, skip_first=skip_first
      )
      pruned, scores = prune_lib.prune(g), prune_lib.scores(g)
      kept = pruned.node_mask[: g.n_features]
      found.append([g.n_features, kept.sum(), pruned.edge_mask.sum(), *scores.values()])
    mean = np.mean(np.asarray(found, np.float64), 0)
    rows.append({
      "model": model, "kind": kind, "target_l0": target, "task": task,
      "prompts": len(prompt_list), "active_features": mean[0], "kept_features": mean[1],
      "kept_edges": mean[2], "replacement": mean[3], "completeness": mean[4],
      "seconds_per_graph": (time.perf_counter() - start) / len(prompt_list),
    })  # fmt: skip
  workdir.mkdir(parents=True, exist_ok=True)
  done.write_text(json.dumps(rows, indent=2, default=float))
  return rows


def memory_row(model: str, lm, kind: str, target: int, out: dict) -> dict:
  """Device memory of a circuit-tracer-scale graph of the dictionary (`attribution.memory`)."""
  dictionaries = zoo.load_replacement(out["dictionaries"])
  m = graph_memory(lm, dictionaries, _MEMORY_TOKENS, _MEMORY_FEATURES, _GRAPH_BATCH)
  return {
    "model": model, "kind": kind, "target_l0": target, "tokens": _MEMORY_TOKENS,
    "feature_nodes": _MEMORY_FEATURES, "batch": _GRAPH_BATCH,
    **{f"{name}_gib": bytes_ / 2**30 for name, bytes_ in m.items()},
  }  # fmt: skip


def circuit_rows(path: pathlib.Path) -> list[dict]:
  if not path.is_file():
    return []
  with path.open() as f:
    rows = list(csv.DictReader(f))
  keep = [
    r
    for r in rows
    if r["model"] in _CIRCUIT_MODELS and r["task"] in _TASKS.value and r["control"] == "False"
  ]
  return [{k: r[k] for k in ("model", "task", "reached", "nodes", "edges")} for r in keep]


def speed_rows(model: str, lm, plan: Plan, batch: int) -> list[dict]:
  """One step of each kind at the model's training shape, beside sparsify's L per-layer
  transcoders of n/L features (it has no CLT)."""
  L, d = lm.config.n_layers, lm.config.d_model
  n, k, rows = L * plan.features_per_layer, plan.targets[0], []
  for kind, cross in KINDS.items():
    spec = f"jumprelu:layers={L}" + ("" if cross else "+cross_layer=False")
    r = harness.benchmark_architecture(spec, d=d, n=n, k=k, batch=batch, repeats=_REPEATS.value)
    rows.append({
      "model": model, "kind": kind, "layers": L, "d": d, "features": n, "batch": batch,
      "ms_per_step": r["step_ms"], "tokens_per_s": r["tokens_per_s"],
      "sparsify_tokens_per_s": r["sparsify_tokens_per_s"], "x_sparsify": r["sparsify_ratio"],
      "sparsify": r["sparsify_note"],
    })  # fmt: skip
  return rows


def figure(frontier: list[dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = list(dict.fromkeys(r["model"] for r in frontier))
  fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.5), squeeze=False)
  for ax, model in zip(axes[0], models, strict=True):
    for kind in KINDS:
      pts = sorted(
        (r["total_l0"], r["mean_fvu"]) for r in frontier if (r["model"], r["kind"]) == (model, kind)
      )
      ax.plot(*zip(*pts, strict=True), "o-", label=kind)
    ax.set_title(PLANS[model].title)
    ax.set_xlabel("total L0 over every layer (held out)")
    ax.set_ylabel("mean per-layer FVU (held out)")
    ax.legend()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _without_model(rows: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if k != "model"} for r in rows]


def layer_table(layers: list[dict]) -> list[dict]:
  """Held-out FVU per layer (rows) of each dictionary (columns)."""
  columns = list(dict.fromkeys((r["kind"], r["target_l0"]) for r in layers))
  fvu = {(r["kind"], r["target_l0"], r["layer"]): r["fvu"] for r in layers}
  return [
    {"layer": layer, **{f"{kind} @ {target}": fvu[kind, target, layer] for kind, target in columns}}
    for layer in sorted({r["layer"] for r in layers})
  ]


def part_seconds(s: dict) -> dict[str, float]:
  """A model's part of the study as recorded when each piece was made (cached pieces keep
  their first run's times): its dictionaries (the one training pass and each evaluation) and its
  graphs."""
  return {
    "dictionaries": s["train_s"] + sum(r["eval_s"] for r in s["frontier"]),
    "graphs": sum(r["seconds_per_graph"] * r["prompts"] for r in s["graphs"]),
  }


def section(model: str, s: dict, circuits: list[dict]) -> list[str]:
  plan = s["plan"]
  mine = {name: [r for r in s[name] if r["model"] == model] for name in ("frontier", "graphs")}
  took = part_seconds(s)
  lines = [
    f"## {plan.title}",
    "",
    f"This part took {sum(took.values()) / 60:.1f} minutes of computing as recorded: "
    f"{took['dictionaries'] / 60:.1f} training and evaluating the dictionaries (training "
    f"{s['train_s'] / 60:.1f}), "
    f"{took['graphs'] / 60:.1f} computing the graphs.",
    "",
    f"JumpReLU dictionaries of all {s['n_layers']} MLPs ({plan.features_per_layer} features per "
    f"layer, {plan.steps} steps of {s['batch']:,} rows streamed from the model; "
    f"`{s['config']}`), per-layer transcoders (`cross_layer=False`) and a CLT, at each "
    "target total L0, all four trained by one sweep from the same forward passes. FVU and L0 "
    f"on {s['eval_windows']} held-out windows; CE and KL of the replacement model without "
    "error terms; eval_s: the seconds of that evaluation.",
    "",
    tables.markdown(_without_model(mine["frontier"])),
    "",
    "Held-out FVU per layer:",
    "",
    tables.markdown(layer_table(s["layers"])),
    "",
    "### Attribution graphs of circuit tasks",
    "",
  ]
  if plan.graphs:
    lines += [
      f"Mean over {2 * plan.pairs} prompts per task (both prompts of the first {plan.pairs} "
      f"held-out contrast pairs, in the model's own tokens, at most {_MAX_LEN.value} of them), "
      "pruned at node 0.8 / edge 0.98: active features, the feature nodes and edges pruning "
      "keeps, and the unpruned graph's replacement and completeness scores.",
      "",
      tables.markdown(_without_model(mine["graphs"])),
      "",
    ]
  else:
    lines += ["Not computed in this run (`--graphs=false`).", ""]
  lines += [
    f"Device memory of a graph at circuit-tracer's scale ({_MEMORY_FEATURES:,} feature nodes "
    f"over {_MEMORY_TOKENS} tokens, targets pulled back {_GRAPH_BATCH} at a time) of the CLT "
    "(`jaxsae.attribution.memory`: its jitted programs compiled on abstract inputs, XLA's "
    "peak = argument + output + temp − alias; the adjacency is filled on the host):",
    "",
    tables.markdown(_without_model(s["memory"])),
    "",
  ]
  if model == "default":
    lines += [
      "Pruned weight-sparse circuits of the same tasks (`docs/circuits`: channels of the "
      "weight-sparse model and of its dense twin, found by pruning, not by attribution). Their "
      "nodes are model channels at every site; a graph's are dictionary features at MLP sites, "
      "so the sizes compare orders of magnitude, not units:",
      "",
      tables.markdown(circuits) if circuits else "(docs/circuits/results.csv not found)",
      "",
    ]
  lines += [
    "### Training step beside sparsify's transcoder",
    "",
    f"One step of each dictionary at its training shape ({s['n_layers']} sites of "
    f"d = {s['d']}, {s['n_layers'] * plan.features_per_layer:,} features, batch {s['batch']:,}; "
    "`experiments.bench.sae`'s harness), beside sparsify's per-layer TopK transcoders of n/L "
    "features (it has no CLT):",
    "",
    tables.markdown(_without_model(s["speed"])),
    "",
  ]
  return lines


def page(sections: dict[str, dict], circuits: list[dict], total_s: float) -> str:
  lines = [
    "# Transcoders and cross-layer transcoders of real models",
    "",
    "Generated by `python -m experiments.attribution_study --workdir=runs/attribution_study "
    f"--publish=docs/attribution --cpu_devices=1` ({total_s / 60:.1f} minutes on this machine, "
    "counting only what this run computed: a rerun reuses each finished dictionary and its "
    "graphs). Made "
    "from scratch, the dictionaries and graphs took "
    f"{sum(sum(part_seconds(s).values()) for s in sections.values()) / 60:.1f} minutes as "
    "recorded when each was made (each model's part is below).",
    "",
    "![frontier](figures/frontier.png)",
    "",
  ]
  for model, s in sections.items():
    lines += section(model, s, circuits)
  return "\n".join(lines)


def study_model(model: str, workdir: pathlib.Path) -> dict:
  """Train, evaluate and graph one model's dictionaries; time their steps."""
  plan = plan_for(model)
  lm = pretrained.load(model)
  prompts = task_prompts(lm, plan.pairs)
  home = workdir if model == "default" else workdir / model
  config = job_config(plan)
  reports = train(config, home / "dictionaries")
  s = {"plan": plan, "frontier": [], "layers": [], "graphs": []}
  for kind in KINDS:
    for target in plan.targets:
      out = reports[kind, target]
      s["frontier"].append(frontier_row(model, kind, target, out))
      s["layers"] += layer_rows(model, kind, target, out)
      if plan.graphs:
        run_dir = home / "graphs" / f"{kind}_l0_{target}"
        skip_first = config.harvest.skip_first
        s["graphs"] += graph_rows(lm, model, kind, target, out, prompts, skip_first, run_dir)
  top = plan.targets[-1]
  s["memory"] = [memory_row(model, lm, "cross-layer", top, reports["cross-layer", top])]
  s.update(
    n_layers=lm.config.n_layers, d=lm.config.d_model, batch=config.train.batch_size,
    eval_windows=config.harvest.eval_windows, train_s=next(iter(reports.values()))["train_s"],
    config=f"experiments/configs/{plan.config.__module__.rsplit('.', 1)[-1]}.py",
  )  # fmt: skip
  s["speed"] = speed_rows(model, lm, plan, config.train.batch_size)
  return s


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  start = time.perf_counter()
  sections = {model: study_model(model, workdir) for model in _MODELS.value}
  circuits = circuit_rows(pathlib.Path(_CIRCUITS.value))
  every = {
    name: [r for s in sections.values() for r in s[name]]
    for name in ("frontier", "layers", "graphs", "speed", "memory")
  }
  figure(every["frontier"], workdir / "figures" / "frontier.png")
  for name, rows in every.items():
    tables.write_csv(workdir / f"{name}.csv", rows)
  (workdir / "RESULTS.md").write_text(page(sections, circuits, time.perf_counter() - start))
  if _PUBLISH.value:
    out = pathlib.Path(_PUBLISH.value)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name in ("RESULTS.md", *(f"{n}.csv" for n in every)):
      shutil.copy(workdir / name, out / name)
    shutil.copy(workdir / "figures" / "frontier.png", out / "figures" / "frontier.png")
  print((workdir / "RESULTS.md").read_text())


if __name__ == "__main__":
  cli.run(main)
