"""The peer-quality page: one table per budget (mean over seeds, and each seed), a CSV of every
run and a figure of held-out FVU per trainer; regenerated from <workdir>/results.jsonl by
`python -m experiments.peer_quality --workdir=... --publish=... --report_only`."""

from __future__ import annotations

import collections
import datetime
import json
import pathlib
import statistics

import jax

from jaxsae import tables
from jaxsae.ablation import findings
from jaxsae.quality.study import TRAINERS

COLUMNS = ("architecture", "trainer", "what", "lr", "seeds", "FVU (mean)", "FVU (each seed)", "ΔCE", "CE recovered", "L0",
           "dead", "train s")  # fmt: skip
COMMAND = "python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality"


def read(workdir: str | pathlib.Path) -> list[dict]:
  path = pathlib.Path(workdir) / "results.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"no {path}: run the study first ({COMMAND})")
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _matched(runs: list[dict], key: str, l0: float) -> float:
  """`key` at L0 = `l0` from one seed's λ ladder (log–log, as the ablation study), or the run's
  own value where the architecture fixes L0 (TopK, BatchTopK)."""
  if runs[0].get("sparsity_coefficient") is None:
    return runs[0][key]
  values = [max(r[key], 1e-12) for r in runs]
  return findings.interpolate_log([r["l0"] for r in runs], values, l0)


def matched_l0(config: dict) -> dict[str, float]:
  """The L0 each architecture is read at: `quality.match_l0`'s, else sae.k."""
  k = config["sae"]["k"]
  match = config.get("quality", {}).get("match_l0", {})
  return collections.defaultdict(lambda: k, {a: v or k for a, v in match.items()})


def summary_rows(rows: list[dict], budget: int, match: dict[str, float]) -> list[dict]:
  """One row per trainer at `budget`: means over its seeds, architectures in turn, best (lowest
  FVU) first within each. λ trainers are read at their architecture's L0 in `match`
  (`matched_l0`) from each seed's ladder."""
  out = []
  at = [r for r in rows if r["budget"] == budget]
  for name, lr in dict.fromkeys((r["trainer"], r.get("lr")) for r in at):
    mine = [r for r in at if r["trainer"] == name and r.get("lr") == lr]
    seeds = sorted({r["seed"] for r in mine})
    k = match[mine[0].get("architecture", "topk")]
    per_seed = [[r for r in mine if r["seed"] == s] for s in seeds]

    def mean(key, per_seed=per_seed, k=k):
      return statistics.fmean(_matched(runs, key, k) for runs in per_seed)

    ladder = mine[0].get("sparsity_coefficient") is not None
    l0s = " ".join(f"{r['l0']:.1f}" for r in sorted(per_seed[0], key=lambda r: r["l0"]))
    out.append({
      "architecture": mine[0].get("architecture", "topk"),
      "trainer": name,
      "what": TRAINERS[name][3] if name in TRAINERS else "",
      "lr": "" if lr is None else f"{lr:.2g}",
      "seeds": ",".join(map(str, seeds)),
      "FVU (mean)": mean("fvu"),
      "FVU (each seed)": " ".join(f"{_matched(runs, 'fvu', k):.4f}" for runs in per_seed),
      "ΔCE": mean("delta_ce"),
      "CE recovered": mean("ce_recovered"),
      "L0": f"{k:g} (λ ladder: L0 {l0s})" if ladder else f"{mean('l0'):.1f}",
      "dead": mean("dead_fraction"),
      "train s": f"{statistics.fmean(r['train_s'] for r in per_seed[0]):.0f}",
    })  # fmt: skip
  order = {a: i for i, a in enumerate(("topk", "batchtopk", "relu", "gated", "jumprelu"))}
  return sorted(out, key=lambda r: (order.get(r["architecture"], 9), r["FVU (mean)"]))


def figure(rows: list[dict], match: dict[str, float], path: pathlib.Path) -> None:
  from matplotlib.figure import Figure  # Not pyplot: the caller's backend is left alone.

  budgets = sorted({r["budget"] for r in rows})
  fig = Figure(figsize=(7, 1.2 + 0.5 * len({r["trainer"] for r in rows}) * len(budgets)))
  ax = fig.add_subplot()
  labels, y = [], 0
  for budget in budgets:
    for summary in reversed(summary_rows(rows, budget, match)):
      ax.scatter(
        [float(x) for x in summary["FVU (each seed)"].split()],
        [y] * len(summary["FVU (each seed)"].split()),
        color="C0" if "jaxsae" in summary["trainer"] else "C1",
      )
      ax.plot([summary["FVU (mean)"]] * 2, [y - 0.3, y + 0.3], color="k")
      labels.append(f"{summary['trainer']} lr {summary['lr']} ({budget}×)")
      y += 1
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel("held-out FVU at each architecture's L0 (dots: seeds; bar: mean)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def page(rows: list[dict], config: dict) -> str:
  h, t, s = config["harvest"], config["train"], config["sae"]
  command = config.get("quality", {}).get("command", COMMAND)
  ce_windows = config.get("quality", {}).get("delta_ce_windows", 0)
  old_lr = 2e-4 / (s["n_latents"] / 2**14) ** 0.5  # The TopK paper's rule, jaxsae's earlier one.
  lines = [
    f"# SAE quality against the peers on `{h['model']}`, on identical activations and budget",
    "",
    f"Every number comes from one run of `{command}` on "
    f"{jax.device_count()} {jax.default_backend()} device(s) (JAX {jax.__version__}); "
    f"`--report_only` rebuilds this page from the workdir. Generated {datetime.date.today()}.",
    "",
    "## Setup",
    "",
    f"- Activations: `{h['hook']}` of the `{h['model']}` model on "
    f"{h['train_windows']:,} training-split windows of {h['seq_len']} tokens (the train store), "
    f"and {h['eval_windows']} validation-split windows (held-out FVU, L0, dead fraction; ΔCE "
    "and CE recovered by splicing into the model"
    + (f", on the first {ce_windows} of them" if ce_windows else "")
    + ").",
    f"- Every trainer: n = {s['n_latents']:,}, batches of {t['batch_size']:,} rows taken from "
    "the train store in the same order (`jaxsae.sae.row_sources.train_batches` with the run's "
    "seed), "
    f"the same number of steps. TopK and BatchTopK at k = {s['k']}; ReLU, Gated and JumpReLU "
    "at a ladder of λ for each trainer (λ means something else on each side: SAELens trains "
    f"on raw activations, jaxsae on E‖x‖² = d), read at L0 = {s['k']} by log–log "
    "interpolation between the ladder's runs of each seed (the L0s of the first seed's runs "
    "are listed).",
    "- jaxsae: the main job's default recipe (`jaxsae/sae/train_config.py`). sparsify: its "
    "`SparseCoder` and its trainer's per-step recipe with each of its optimizers "
    "(`jaxsae/quality/peers.py` says exactly what is run). SAELens: `SAETrainer.fit()` itself, "
    "at jaxsae's learning rate (SAELens has no rule of its own; its default schedule, constant).",
    "- lr: each run's peak learning rate. SAELens and sparsify's Adam are given jaxsae's default "
    "rate; where their runs at jaxsae's earlier default (the TopK paper's 2e-4/√(n/2¹⁴), "
    f"{old_lr:.2g} here) were made they stay on the page, so each peer's best rate is shown "
    "(sparsify's signum keeps its own). The JumpReLU ladders are of target L0s (Gemma Scope "
    "2's quadratic penalty), not λ.",
    "- Each peer's SAE is read back from the peer's own saved format (sparsify's `cfg.json` + "
    "`sae.safetensors`, SAELens's inference folder) and evaluated by the same code as jaxsae's.",
    "- Dead: never fired on the held-out store. Train s: wall seconds of training alone, "
    "measured while other jobs shared the machine (and the peers' torch threads set by "
    "`quality.peer_threads`): a rough guide, not a speed comparison (`experiments/bench` is).",
    "- nan: the trainer's λ ladder never reached L0 = k, so it has no value at matched L0 "
    "(its L0s are listed).",
  ]
  match = matched_l0(config)
  other = {a: v for a, v in match.items() if v != s["k"]}
  if other:
    lines.append(
      "- Read at another L0 than k (`quality.match_l0`, where the family does not reach "
      "L0 = k at a usable FVU within this budget; the study's config says why): "
      + ", ".join(f"{a} at L0 = {v:g}" for a, v in other.items())
      + "."
    )
  for budget in sorted({r["budget"] for r in rows}):
    steps = next(r["steps"] for r in rows if r["budget"] == budget)
    lines += [
      "",
      f"## {budget}× the base budget ({steps:,} steps, {steps * t['batch_size']:,} activations)",
      "",
      tables.markdown(summary_rows(rows, budget, match), COLUMNS),
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
    figure(rows, matched_l0(config), out / "figures" / "fvu.png")
    tables.write_csv(out / "results.csv", rows)
    name = "RESULTS.md" if out != workdir else "results.md"
    (out / name).write_text(page(rows, config) + "\n", encoding="utf-8")
    written += [out / name, out / "results.csv", out / "figures" / "fvu.png"]
  return written
