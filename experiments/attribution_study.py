"""Per-layer transcoders against a cross-layer transcoder on the shipped model: their FVU-vs-L0
frontiers and replacement models, attribution graphs of circuit tasks beside the pruned
weight-sparse circuits of the same tasks, and the training step beside sparsify's transcoder.

  python -m experiments.attribution_study --workdir=runs/attribution_study \
      --publish=docs/attribution

Each dictionary is the CLT job's (`jaxsae/clt_job.py`: JumpReLU, 4 × 512 features, trained
streamed from the model), once with `clt.cross_layer=False` (per-layer transcoders) and once
without, at each target total L0 of --targets. Graphs: the first --pairs contrast pairs of each
task of --tasks from the model's held-out code (`jaxsae.sparse.task_suite`), both prompts of a
pair, pruned at circuit-tracer's thresholds; the weight-sparse circuits are the rows of
--circuits (docs/circuits/results.csv, `experiments.prune`) for the same tasks. Writes
RESULTS.md, frontier.csv, graphs.csv, speed.csv and figures/frontier.png to the workdir (and
--publish). The frontier and graph runs resume from the workdir's results.json files.
"""

import csv
import json
import pathlib
import shutil
import time

import numpy as np
from absl import flags

from jaxsae import cli, clt_job, tables
from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution import prune as prune_lib
from jaxsae.bench import harness
from jaxsae.models import pretrained
from jaxsae.sae import zoo
from jaxsae.sparse.task_suite import build_suite
from jaxsae.text import model_corpus

_WORKDIR = flags.DEFINE_string("workdir", "runs/attribution_study", "Where results go.")
_PUBLISH = flags.DEFINE_string("publish", None, "Also copy the page and tables here.")
_TARGETS = flags.DEFINE_list("targets", ["16", "48"], "Target total L0 of each dictionary.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps of 1,024 streamed rows.")
_FEATURES = flags.DEFINE_integer("features_per_layer", 512, "Features of each layer.")
_TASKS = flags.DEFINE_list(
  "tasks", ["closing_quote", "bracket_depth", "closing_bracket_type"], "Circuit tasks."
)
_PAIRS = flags.DEFINE_integer("pairs", 4, "Contrast pairs per task (two prompts each).")
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


def train(kind: str, target: int, workdir: pathlib.Path) -> dict:
  """One dictionary and its replacement-model report (cached in workdir/results.json)."""
  done = workdir / "results.json"
  if done.exists():
    return json.loads(done.read_text())
  c = clt_job.base_config()
  c.clt.cross_layer, c.clt.prompts = KINDS[kind], ()
  c.clt.features_per_layer = _FEATURES.value
  c.sae.k, c.train.steps = target, _STEPS.value
  if _WINDOWS.value:
    c.harvest.train_windows, c.harvest.eval_windows = (int(w) for w in _WINDOWS.value)
  start = time.perf_counter()
  out = clt_job.run(c, workdir)
  out["wall_s"] = time.perf_counter() - start
  done.write_text(json.dumps(out, indent=2, default=float))
  return out


def frontier_row(kind: str, target: int, out: dict) -> dict:
  layers = out["layers"]
  return {
    "kind": kind, "target_l0": target, "total_l0": sum(r["l0"] for r in layers),
    "mean_fvu": float(np.mean([r["fvu"] for r in layers])),
    **{f"fvu_{r['layer']}": r["fvu"] for r in layers},
    "ce_original": out["ce_original"], "ce_replacement": out["ce_replacement"],
    "delta_ce": layers[0]["delta_ce"], "kl": layers[0]["kl"],
    "train_s": out["train_s"], "wall_s": out["wall_s"],
  }  # fmt: skip


def task_prompts(lm) -> dict[str, list[np.ndarray]]:
  docs = model_corpus.for_model(lm).read("validation")
  suite = build_suite(
    docs, lm.tokenizer, _PAIRS.value, _MAX_LEN.value, controls=False, names=_TASKS.value
  )
  return {
    name: [ex.prompt_ids for pair in task.pairs for ex in (pair.a, pair.b)]
    for name, task in suite.items()
  }


def graph_rows(lm, kind, target, dictionaries, prompts) -> list[dict]:
  rows = []
  for task, prompt_list in prompts.items():
    start, found = time.perf_counter(), []
    for tokens in prompt_list:
      g = graph_lib.compute(lm, dictionaries, tokens, batch_size=64)
      pruned, scores = prune_lib.prune(g), prune_lib.scores(g)
      kept = pruned.node_mask[: g.n_features]
      found.append([g.n_features, kept.sum(), pruned.edge_mask.sum(), *scores.values()])
    mean = np.mean(np.asarray(found, np.float64), 0)
    rows.append({
      "kind": kind, "target_l0": target, "task": task, "prompts": len(prompt_list),
      "active_features": mean[0], "kept_features": mean[1], "kept_edges": mean[2],
      "replacement": mean[3], "completeness": mean[4],
      "seconds_per_graph": (time.perf_counter() - start) / len(prompt_list),
    })  # fmt: skip
  return rows


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


def speed_rows() -> list[dict]:
  """One step of each kind at the job's shape, beside sparsify's per-layer transcoders."""
  n, rows = 4 * _FEATURES.value, []
  for kind, cross in KINDS.items():
    spec = "jumprelu:layers=4" + ("" if cross else "+cross_layer=False")
    r = harness.benchmark_architecture(spec, d=128, n=n, k=32, batch=1024, repeats=_REPEATS.value)
    rows.append({
      "kind": kind, "ms_per_step": r["step_ms"], "tokens_per_s": r["tokens_per_s"],
      "sparsify_tokens_per_s": r["sparsify_tokens_per_s"], "x_sparsify": r["sparsify_ratio"],
      "sparsify": r["sparsify_note"],
    })  # fmt: skip
  return rows


def figure(frontier: list[dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.5))
  for kind in KINDS:
    pts = sorted((r["total_l0"], r["mean_fvu"]) for r in frontier if r["kind"] == kind)
    ax.plot(*zip(*pts, strict=True), "o-", label=kind)
  ax.set_xlabel("total L0 over the 4 layers (held out)")
  ax.set_ylabel("mean per-layer FVU (held out)")
  ax.legend()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def page(frontier, graphs, circuits, speed, total_s: float) -> str:
  return "\n".join(
    [
      "# Transcoders and cross-layer transcoders of the shipped model",
      "",
      "Generated by `python -m experiments.attribution_study --workdir=runs/attribution_study "
      f"--publish=docs/attribution` ({total_s / 60:.1f} minutes on this machine).",
      "",
      f"JumpReLU dictionaries of all 4 MLPs ({_FEATURES.value} features per layer, "
      f"{_STEPS.value} steps of 1,024 rows streamed from the model), per-layer transcoders "
      "(`clt.cross_layer=False`) and a CLT, at each target total L0. FVU and L0 on held-out "
      "windows; CE and KL of the replacement model without error terms.",
      "",
      "![frontier](figures/frontier.png)",
      "",
      tables.markdown(frontier),
      "",
      "## Attribution graphs of circuit tasks",
      "",
      f"Mean over {2 * _PAIRS.value} prompts per task (both prompts of the first {_PAIRS.value} "
      f"held-out contrast pairs, at most {_MAX_LEN.value} tokens), pruned at node 0.8 / edge "
      "0.98: active features, the feature "
      "nodes and edges pruning keeps, and the unpruned graph's replacement and completeness "
      "scores.",
      "",
      tables.markdown(graphs),
      "",
      "Pruned weight-sparse circuits of the same tasks (`docs/circuits`: channels of the "
      "weight-sparse model and of its dense twin, found by pruning, not by attribution). Their "
      "nodes are model channels at every site; a graph's are dictionary features at MLP sites, "
      "so the sizes compare orders of magnitude, not units:",
      "",
      tables.markdown(circuits) if circuits else "(docs/circuits/results.csv not found)",
      "",
      "## Training step beside sparsify's transcoder",
      "",
      "One step of each dictionary at its training shape (4 sites of d = 128, "
      f"{4 * _FEATURES.value} features, batch 1,024; `experiments.bench.sae`'s harness), beside "
      "sparsify's 4 per-layer TopK transcoders of n/4 features (it has no CLT):",
      "",
      tables.markdown(speed),
      "",
    ]
  )


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  start = time.perf_counter()
  lm = pretrained.load("default")
  prompts = task_prompts(lm)
  frontier, graphs = [], []
  for kind in KINDS:
    for target in (int(t) for t in _TARGETS.value):
      run_dir = workdir / f"{kind}_l0_{target}"
      out = train(kind, target, run_dir)
      frontier.append(frontier_row(kind, target, out))
      graphs += graph_rows(lm, kind, target, zoo.load_replacement(out["dictionaries"]), prompts)
  speed = speed_rows()
  circuits = circuit_rows(pathlib.Path(_CIRCUITS.value))
  figure(frontier, workdir / "figures" / "frontier.png")
  for name, rows in (("frontier", frontier), ("graphs", graphs), ("speed", speed)):
    tables.write_csv(workdir / f"{name}.csv", rows)
  (workdir / "RESULTS.md").write_text(
    page(frontier, graphs, circuits, speed, time.perf_counter() - start)
  )
  if _PUBLISH.value:
    out = pathlib.Path(_PUBLISH.value)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name in ("RESULTS.md", "frontier.csv", "graphs.csv", "speed.csv"):
      shutil.copy(workdir / name, out / name)
    shutil.copy(workdir / "figures" / "frontier.png", out / "figures" / "frontier.png")
  print((workdir / "RESULTS.md").read_text())


if __name__ == "__main__":
  cli.run(main)
