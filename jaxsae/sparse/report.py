"""Tables and figures of a pruning study: circuit sizes with their nonsense controls, the
sparse-to-dense edge ratio at matched pretraining loss, the capability-interpretability frontier.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

import numpy as np

from jaxsae import tables
from jaxsae.sparse.pruned_circuit import Circuit
from jaxsae.sparse.task_suite import NONSENSE_SUFFIX

COLUMNS = (
  "model",
  "task",
  "control",
  "pretrain_loss",
  "hidden_density",
  "reached",
  "nodes",
  "edges",
  "full_loss",
  "sufficiency_loss",
  "sufficiency_acc",
  "necessity_loss",
  "necessity_acc",
  "ablated_loss",
)


def row(circuit: Circuit) -> dict:
  m, held = circuit.metrics, circuit.metrics["heldout"]
  return {
    "model": circuit.model,
    "task": circuit.task.removesuffix(NONSENSE_SUFFIX),
    "control": circuit.task.endswith(NONSENSE_SUFFIX),
    "pretrain_loss": m.get("pretrain_loss"),
    "hidden_density": m.get("hidden_density"),
    "reached": bool(m["reached_target"]),
    "nodes": int(m["nodes"]),
    "edges": int(m["edges"]["total"]),
    "full_loss": held["full"]["loss"],
    "sufficiency_loss": held["sufficiency"]["loss"],
    "sufficiency_acc": held["sufficiency"]["accuracy"],
    "necessity_loss": held["necessity"]["loss"],
    "necessity_acc": held["necessity"]["accuracy"],
    "ablated_loss": held["all_ablated"]["loss"],
  }


def load_rows(workdir: str | pathlib.Path) -> list[dict]:
  paths = sorted((pathlib.Path(workdir) / "circuits").glob("*/*.json"))
  return [row(Circuit.load(p)) for p in paths]


def geometric_mean(values: Sequence[float]) -> float:
  values = [v for v in values if v > 0]
  return math.exp(np.mean(np.log(values))) if values else float("nan")


def task_table(rows: list[dict]) -> list[dict]:
  """One row per (model, task): the real task's circuit beside its nonsense control's."""
  real = {(r["model"], r["task"]): r for r in rows if not r["control"]}
  control = {(r["model"], r["task"]): r for r in rows if r["control"]}
  out = []
  for key, r in real.items():
    c = control.get(key, {})
    out.append(
      {
        "model": r["model"],
        "task": r["task"],
        "full_loss": r["full_loss"],
        "reached": r["reached"],
        "nodes": r["nodes"],
        "edges": r["edges"],
        "sufficiency_loss": r["sufficiency_loss"],
        "necessity_loss": r["necessity_loss"],
        "control_reached": c.get("reached", ""),
        "control_nodes": c.get("nodes", ""),
        "control_edges": c.get("edges", ""),
        "control_sufficiency_loss": c.get("sufficiency_loss", ""),
      }
    )
  return out


def edge_ratios(rows: list[dict], sparse: str, dense: str) -> tuple[list[dict], float]:
  """Per task where both models' circuits reached the target: dense edges / sparse edges, and
  their geometric mean."""
  real = {(r["model"], r["task"]): r for r in rows if not r["control"]}
  tasks = sorted({t for (m, t) in real if m == sparse} & {t for (m, t) in real if m == dense})
  out = []
  for t in tasks:
    s, d = real[(sparse, t)], real[(dense, t)]
    if s["reached"] and d["reached"] and s["edges"] > 0:
      out.append(
        {
          "task": t,
          f"edges_{sparse}": s["edges"],
          f"edges_{dense}": d["edges"],
          "ratio": d["edges"] / s["edges"],
        }
      )
  return out, geometric_mean([r["ratio"] for r in out])


def frontier(rows: list[dict]) -> list[dict]:
  """Per model: pretraining loss, hidden-weight density, and the geometric mean of circuit
  edges over the tasks that every model reaching at least one target reached (a model that
  reached none is listed with NaN)."""
  real = [r for r in rows if not r["control"]]
  models = sorted({r["model"] for r in real})
  reached = {m: {r["task"] for r in real if r["model"] == m and r["reached"]} for m in models}
  some = [done for done in reached.values() if done]
  shared = set.intersection(*some) if some else set()
  out = []
  for m in models:
    mine = [r for r in real if r["model"] == m and r["task"] in shared and r["reached"]]
    first = next(r for r in real if r["model"] == m)
    out.append(
      {
        "model": m,
        "pretrain_loss": first["pretrain_loss"],
        "hidden_density": first["hidden_density"],
        "tasks": len(mine),
        "edges_geomean": geometric_mean([r["edges"] for r in mine])
        if len(mine) == len(shared)
        else float("nan"),
      }
    )
  return out


def plot_frontier(points: list[dict], path: str | pathlib.Path) -> pathlib.Path:
  from matplotlib.figure import Figure  # Not pyplot: the caller's backend is left alone.

  fig = Figure(figsize=(6, 4.2))
  ax = fig.subplots()
  for kind, marker, color in (("sparse", "o", "tab:blue"), ("dense", "s", "tab:orange")):
    chosen = [p for p in points if (p["hidden_density"] < 0.99) == (kind == "sparse")]
    chosen = [p for p in chosen if np.isfinite(p["edges_geomean"])]
    if not chosen:
      continue
    ax.scatter(
      [p["pretrain_loss"] for p in chosen],
      [p["edges_geomean"] for p in chosen],
      marker=marker,
      color=color,
      label=f"{kind} models",
    )
    for p in chosen:
      ax.annotate(
        p["model"],
        (p["pretrain_loss"], p["edges_geomean"]),
        fontsize=7,
        xytext=(3, 3),
        textcoords="offset points",
      )
  ax.set_yscale("log")
  ax.set_xlabel("pretraining loss (test split, nats/byte)")
  ax.set_ylabel("circuit edges (geometric mean over tasks)")
  ax.set_title("Capability vs circuit size (lower left is better)")
  if ax.get_legend_handles_labels()[0]:
    ax.legend()
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  return path


def findings(rows: list[dict], matched: Sequence[tuple[str, str]]) -> list[str]:
  """Bullet points read off the numbers: edge ratios, the controls, tasks the circuit solves
  better than its model."""
  lines = ["## Findings", ""]
  for sparse, dense in matched:
    ratios, gm = edge_ratios(rows, sparse, dense)
    if ratios:
      lines.append(
        f"- Circuits of `{dense}` have **{gm:.1f}x** the edges of `{sparse}`'s (geometric mean "
        f"over {len(ratios)} tasks both reached; per task "
        f"{min(r['ratio'] for r in ratios):.1f}x to {max(r['ratio'] for r in ratios):.1f}x)."
      )
  points = [p for p in frontier(rows) if np.isfinite(p["edges_geomean"])]
  for sparse, _ in matched:
    mine = next((p for p in points if p["model"] == sparse), None)
    rivals = [
      p
      for p in points
      if mine and p["hidden_density"] >= 0.99 and p["pretrain_loss"] <= mine["pretrain_loss"]
    ]
    if mine and rivals:
      best = min(rivals, key=lambda p: p["edges_geomean"])
      lines.append(
        f"- Against the dense *frontier* (the dense model with the smallest circuits among those "
        f"at least as good in pretraining loss, `{best['model']}`, {best['pretrain_loss']:.3f} vs "
        f"{mine['pretrain_loss']:.3f}): **{best['edges_geomean'] / mine['edges_geomean']:.1f}x** "
        f"the edges of `{sparse}`'s (geometric mean over the {mine['tasks']} frontier tasks)."
      )
  controls = [r for r in rows if r["control"]]
  if controls:
    hit = sum(r["reached"] for r in controls)
    lines.append(
      f"- Nonsense controls reaching the target: **{hit} of {len(controls)}** (mean held-out "
      f"sufficiency loss {np.mean([r['sufficiency_loss'] for r in controls]):.3f})."
    )
  elicited = [
    f"{r['model']}/{r['task']} ({r['full_loss']:.2f} -> {r['sufficiency_loss']:.2f})"
    for r in rows
    if not r["control"] and r["reached"] and r["full_loss"] > 1.0
  ]
  if elicited:
    lines.append(
      "- Circuits that solve a task their whole model does not (held-out loss, model -> "
      "circuit): " + ", ".join(elicited) + ". Mean ablation of the rest can help; the controls "
      "above show whether arbitrary labels could be fitted the same way."
    )
  return lines


def write(workdir: str | pathlib.Path, matched: Sequence[tuple[str, str]]) -> str:
  """results.csv, tasks.md/.csv, edge_ratio.csv, frontier.csv and figures/frontier.png in
  `workdir`; returns the markdown summary (also written as RESULTS.md)."""
  workdir = pathlib.Path(workdir)
  rows = load_rows(workdir)
  if not rows:
    return "no circuits yet"
  tables.write_csv(workdir / "results.csv", rows, COLUMNS)
  per_task = task_table(rows)
  tables.write_csv(workdir / "tasks.csv", per_task)
  parts = ["# Pruned circuits", "", *findings(rows, matched), ""]
  parts += ["## Circuits and their nonsense controls", ""]
  parts += [
    "Losses are the two-token binary loss on held-out pairs (chance 2 ln 2 = 1.386); "
    "sufficiency keeps only the circuit, necessity ablates only the circuit.",
    "",
    tables.markdown(per_task, digits=3),
    "",
  ]
  for sparse, dense in matched:
    ratios, gm = edge_ratios(rows, sparse, dense)
    tables.write_csv(workdir / f"edge_ratio_{sparse}_vs_{dense}.csv", ratios)
    parts += [f"## Edges: {dense} / {sparse}", ""]
    if ratios:
      parts += [tables.markdown(ratios, digits=2), "", f"Geometric mean ratio: **{gm:.2f}x**", ""]
    else:
      parts += ["No task where both circuits reached the target.", ""]
  points = frontier(rows)
  tables.write_csv(workdir / "frontier.csv", points)
  plot_frontier(points, workdir / "figures" / "frontier.png")
  parts += ["## Capability-interpretability frontier", "", tables.markdown(points, digits=4), ""]
  parts += ["![frontier](figures/frontier.png)", ""]
  text = "\n".join(parts)
  (workdir / "RESULTS.md").write_text(text)
  return text
