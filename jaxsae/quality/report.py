"""The peer-quality page: one table per budget (mean over seeds, and each seed), a CSV of every
run and a figure of held-out FVU per trainer; regenerated from <workdir>/results.jsonl by
`python -m experiments.peer_quality --workdir=... --publish=... --report_only`."""

from __future__ import annotations

import datetime
import json
import pathlib
import statistics

import jax

from jaxsae import tables
from jaxsae.quality.study import TRAINERS

COLUMNS = ("trainer", "what", "seeds", "FVU (mean)", "FVU (each seed)", "ΔCE", "CE recovered", "L0",
           "dead", "train s")  # fmt: skip
COMMAND = "python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality"


def read(workdir: str | pathlib.Path) -> list[dict]:
  path = pathlib.Path(workdir) / "results.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"no {path}: run the study first ({COMMAND})")
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_rows(rows: list[dict], budget: int) -> list[dict]:
  """One row per trainer at `budget`: means over its seeds, best (lowest FVU) first."""
  out = []
  for name in dict.fromkeys(r["trainer"] for r in rows if r["budget"] == budget):
    runs = [r for r in rows if r["budget"] == budget and r["trainer"] == name]

    def mean(key, runs=runs):
      return statistics.fmean(r[key] for r in runs)

    out.append({
      "trainer": name,
      "what": TRAINERS[name][2] if name in TRAINERS else "",
      "seeds": ",".join(str(r["seed"]) for r in runs),
      "FVU (mean)": mean("fvu"),
      "FVU (each seed)": " ".join(f"{r['fvu']:.4f}" for r in runs),
      "ΔCE": mean("delta_ce"),
      "CE recovered": mean("ce_recovered"),
      "L0": mean("l0"),
      "dead": mean("dead_fraction"),
      "train s": f"{mean('train_s'):.0f}",
    })  # fmt: skip
  return sorted(out, key=lambda r: r["FVU (mean)"])


def figure(rows: list[dict], path: pathlib.Path) -> None:
  from matplotlib.figure import Figure  # Not pyplot: the caller's backend is left alone.

  budgets = sorted({r["budget"] for r in rows})
  fig = Figure(figsize=(7, 1.2 + 0.5 * len({r["trainer"] for r in rows}) * len(budgets)))
  ax = fig.add_subplot()
  labels, y = [], 0
  for budget in budgets:
    for summary in reversed(summary_rows(rows, budget)):
      runs = [r for r in rows if r["budget"] == budget and r["trainer"] == summary["trainer"]]
      ax.scatter(
        [r["fvu"] for r in runs],
        [y] * len(runs),
        color="C0" if "jaxsae" in summary["trainer"] else "C1",
      )
      ax.plot([summary["FVU (mean)"]] * 2, [y - 0.3, y + 0.3], color="k")
      labels.append(f"{summary['trainer']} ({budget}×)")
      y += 1
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel("held-out FVU (dots: seeds; bar: mean)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def page(rows: list[dict], config: dict) -> str:
  h, t, s = config["harvest"], config["train"], config["sae"]
  lines = [
    "# SAE quality against the peers, on identical activations and budget",
    "",
    f"Every number comes from one run of `{COMMAND}` on "
    f"{jax.device_count()} {jax.default_backend()} device(s) (JAX {jax.__version__}); "
    f"`--report_only` rebuilds this page from the workdir. Generated {datetime.date.today()}.",
    "",
    "## Setup",
    "",
    f"- Activations: the main job's stores: `{h['hook']}` of the `{h['model']}` model on "
    f"{h['train_windows']:,} training-split windows of {h['seq_len']} tokens (the train store), "
    f"and {h['eval_windows']} validation-split windows (held-out FVU, L0, dead fraction; ΔCE "
    "and CE recovered by splicing into the model).",
    f"- Every trainer: TopK with n = {s['n_latents']:,}, k = {s['k']}, batches of "
    f"{t['batch_size']:,} rows taken from the train store in the same order "
    "(`jaxsae.sae.data.train_batches` with the run's seed), the same number of steps.",
    "- jaxsae: the main job's default recipe (`jaxsae/sae/train_config.py`). sparsify: its "
    "`SparseCoder` and its trainer's per-step recipe with each of its optimizers "
    "(`jaxsae/quality/peers.py` says exactly what is run). SAELens: `SAETrainer.fit()` itself, "
    "at jaxsae's learning rate (SAELens has no rule of its own; its default schedule, constant).",
    "- Each peer's SAE is read back from the peer's own saved format (sparsify's `cfg.json` + "
    "`sae.safetensors`, SAELens's inference folder) and evaluated by the same code as jaxsae's.",
    "- Dead: never fired on the held-out store. Train s: wall seconds of training alone "
    "(torch with every core for the peers).",
  ]
  for budget in sorted({r["budget"] for r in rows}):
    steps = next(r["steps"] for r in rows if r["budget"] == budget)
    lines += [
      "",
      f"## {budget}× the main job's budget ({steps:,} steps, {steps * t['batch_size']:,} "
      "activations)",
      "",
      tables.markdown(summary_rows(rows, budget), COLUMNS),
    ]
  lines += ["", "![held-out FVU per trainer](figures/fvu.png)"]
  return "\n".join(lines)


def write(workdir: str | pathlib.Path, publish: str | pathlib.Path | None = None) -> list:
  workdir = pathlib.Path(workdir)
  rows = read(workdir)
  config = json.loads((workdir / "config.json").read_text())
  written = []
  for out in [workdir] + ([pathlib.Path(publish)] if publish else []):
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figure(rows, out / "figures" / "fvu.png")
    tables.write_csv(out / "results.csv", rows)
    name = "RESULTS.md" if out != workdir else "results.md"
    (out / name).write_text(page(rows, config) + "\n", encoding="utf-8")
    written += [out / name, out / "results.csv", out / "figures" / "fvu.png"]
  return written
