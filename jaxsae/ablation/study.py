"""The activation-function ablation study, end to end (python -m experiments.ablation).

1. harvest the hook's activations into a training and a held-out store (as the main job);
2. train every SAE of the grid in one pass over the training store (variant groups, vmapped
   members; resumable);
3. measure every SAE on the held-out store and in the model: L0, FVU, MSE, shrinkage γ, dead
   fractions, ΔCE, CE recovered against zero and mean ablation, KL score;
4. for each family at the reference width and value: progressive recovery, activation
   shrinkage by refinement, ablation sparsity, probe loss, N2G precision/recall, and a
   feature browser for the families in evals.browser_families;
5. fit L(n, k), L(n) at the reference k and L(C) on the reference family;
6. write results.csv/.md, interpretability.csv, recovery.csv, the figures and RESULTS.md with
   each TopK-paper finding checked on these numbers.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import jax
import ml_collections
import numpy as np

from jaxsae import main_job, run_log, tables
from jaxsae.ablation import config as config_lib
from jaxsae.ablation import findings as findings_lib
from jaxsae.ablation import grid as grid_lib
from jaxsae.ablation import interpret, measure, plots
from jaxsae.evals import downstream, scaling
from jaxsae.models import pretrained
from jaxsae.sae import train as train_lib

COLUMNS = (
  "label",
  "family",
  "width",
  "k",
  "sparsity_coefficient",
  "l0",
  "fvu",
  "mse",
  "shrinkage",
  "dead_fraction",
  "dead_held_out",
  "delta_ce",
  "ce_recovered",
  "ce_recovered_mean",
  "kl_score",
)
INTERP_COLUMNS = (
  "family",
  "label",
  "l0",
  "fvu",
  "probe_loss",
  "n2g_precision",
  "n2g_recall",
  "n2g_f1",
  "ablation_effective",
  "ablation_fraction",
  "refine_fixed_activation_growth",
  "refine_fixed_fvu_before",
  "refine_fixed_fvu_after",
  "refine_free_fvu_after",
  "refine_free_l0_after",
)


@dataclasses.dataclass
class StudyResult:
  rows: list[dict]  # One per SAE.
  interp: dict[str, dict]  # Per family, at the reference width and value.
  curves: dict[str, list[dict]]  # Progressive recovery per family.
  findings: list[findings_lib.Finding]
  figures: list[pathlib.Path]


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> StudyResult:
  training = config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  lm = pretrained.load(config.harvest.model)
  data = main_job.harvest_stores(config, lm, workdir)
  result = train_lib.train(training, workdir / "train", data.train)
  hook, grid = config.harvest.hook, config.grid
  last = _last_train_record(workdir / "train" / "metrics.jsonl")

  reference = downstream.reference_losses(lm, data.eval_windows, hook)
  rows, saes = [], {}
  for member in grid_lib.member_rows(result.groups, grid):
    group = next(g for g in result.groups if g.name == member["group"])
    sae_config = group.member_config(member["index"])
    variables = result.member_variables(group.name, member["index"])
    saes[member["label"]] = (sae_config, variables)
    row = {**member, "dead_fraction": last.get(f"{member['label']}/dead_fraction", np.nan)}
    row.update(
      measure.reconstruction_and_downstream(
        lm, data.held_out, data.eval_windows, hook, reference, sae_config, variables, result.scale
      )
    )
    rows.append(row)
  _mark_references(rows, grid)

  interp, curves = _interpretability(config, lm, data, rows, saes, result.scale, workdir)
  fits, frontier, frontier_fit = _scaling(rows, grid, workdir, config.train.batch_size)
  ref_k = _reference_k(grid)
  found = [
    findings_lib.topk_beats_relu(rows, grid.reference_width),
    findings_lib.auxk_prevents_dead(rows),
    findings_lib.multi_topk_recovers(curves, ref_k or 0),
    findings_lib.power_law_in_n(
      fits.get("n"), ref_k or 0, [(r["width"], r["fvu"]) for r in fits["at_k"]]
    ),
    *findings_lib.topk_interpretability(interp),
  ]
  figures = []
  if jax.process_index() == 0:
    figures = _write_outputs(
      workdir, rows, interp, curves, found, fits, frontier, frontier_fit, reference, grid
    )
  return StudyResult(rows, interp, curves, found, figures)


PUBLISHED = (
  "RESULTS.md",
  "results.csv",
  "interpretability.csv",
  "probes.csv",
  "recovery.csv",
  "figures",
)


def publish(workdir: str | pathlib.Path, target: str | pathlib.Path) -> None:
  """Copy the results page with its tables and figures (relative links kept) to `target`."""
  workdir, target = pathlib.Path(workdir), pathlib.Path(target)
  target.mkdir(parents=True, exist_ok=True)
  for name in PUBLISHED:
    source = workdir / name
    if source.is_dir():
      shutil.copytree(source, target / name, dirs_exist_ok=True)
    elif source.exists():
      shutil.copy2(source, target / name)


def _last_train_record(path: pathlib.Path) -> dict:
  records = run_log.read_jsonl(path) if path.exists() else []
  records = [r for r in records if r.get("split", "train") == "train"]
  return records[-1] if records else {}


def _reference_k(grid) -> int | None:
  """k of the reference TopK-style run (reference family, else topk) at the reference width."""
  for family in (grid.reference_family, "topk"):
    for run in grid_lib.runs_of(grid):
      if run.family == family and run.width == grid.reference_width and run.swept == "k":
        return int(run.values[min(grid.reference_index, len(run.values) - 1)])
  return None


def _mark_references(rows: list[dict], grid) -> None:
  """is_reference: the family's SAE at the reference width and value index (the middle one)."""
  for row in rows:
    run = next(
      r for r in grid_lib.runs_of(grid) if r.family == row["family"] and r.width == row["width"]
    )
    index = min(grid.reference_index, len(run.values) - 1)
    row["is_width_reference"] = row["value_index"] == index or len(run.values) == 1
    row["is_reference"] = row["width"] == grid.reference_width and row["value_index"] == index


def _interpretability(config, lm, data, rows, saes, scale, workdir):
  evals, hook = config.evals, config.harvest.hook
  x_held = data.held_out.rows(np.arange(min(len(data.held_out), evals.refine_rows)))
  probe_data = measure.probe_dataset(config, lm) if evals.probe_windows > 0 else None
  interp, curves = {}, {}
  if probe_data is not None:
    neurons = measure.probe_neurons(probe_data)
    interp["neurons (d_model basis)"] = {"probe_loss": neurons.probe_loss}
  for row in [r for r in rows if r["is_reference"]]:
    family = row["family"]
    sae_config, variables = saes[row["label"]]
    out = {"label": row["label"], "l0": row["l0"], "fvu": row["fvu"]}
    if row["architecture"] in measure.RECOVERABLE:
      curves[family] = measure.progressive_recovery(
        sae_config, variables, scale, x_held, row["l0"], evals.recovery_multiples
      )
    out.update(
      measure.activation_shrinkage(sae_config, variables, scale, x_held, evals.refine_steps)
    )
    if evals.ablation_latents > 0:
      tokens = data.eval_windows[: evals.ablation_windows, :-1]
      out.update(
        measure.ablation_sparsity(
          lm, tokens, hook, sae_config, variables, scale, evals.ablation_latents, config.seed
        )
      )
    if probe_data is not None:
      report = measure.probe_report(sae_config, variables, scale, probe_data)
      out["probe_loss"] = report.probe_loss
      out["probe_tasks"] = report.rows()
    encode = measure.encoder(sae_config, scale)(variables)
    store = data.held_out.store
    summary, scores = interpret.n2g_scores(store, hook, encode, evals.n2g_latents, config.seed)
    out.update(summary)
    if family in evals.browser_families and evals.browser_latents > 0:
      interpret.write_feature_browser(
        workdir / "browser" / family,
        f"{row['label']} at {hook}",
        lm,
        store,
        hook,
        encode,
        np.asarray(variables["params"]["W_dec"]) / scale,
        scores,
        evals.browser_latents,
        config.seed,
      )
    interp[family] = out
  return interp, curves


def _scaling(rows, grid, workdir, batch_size: int):
  """Fits on the reference family: L(n, k) jointly, L(n) at the reference k, L(C) from training."""
  family = grid.reference_family
  points = [r for r in rows if r["family"] == family and r["k"] is not None]
  fits: dict = {"points": points}
  ref_k = _reference_k(grid)
  at_k = sorted((r for r in points if r["k"] == ref_k), key=lambda r: r["width"])
  fits["at_k"] = at_k
  fits["n"] = (
    _try(lambda: scaling.fit_power_law([r["width"] for r in at_k], [r["fvu"] for r in at_k]))
    if len(at_k) >= 3
    else None
  )
  fits["joint"] = _try(
    lambda: scaling.fit_joint_nk(
      [r["width"] for r in points], [r["k"] for r in points], [r["fvu"] for r in points]
    )
  )
  frontier = frontier_fit = None
  path = workdir / "train" / "metrics.jsonl"
  if path.exists():
    records = [r for r in run_log.read_jsonl(path) if r.get("split", "train") == "train"]
    curves = []
    for r in points:
      key = f"{r['label']}/fvu"
      steps = np.array([rec["step"] for rec in records if key in rec], float)
      loss = np.array([rec[key] for rec in records if key in rec], float)
      if len(steps) > 1:
        curves.append((steps * batch_size * r["width"], loss))
    if curves:
      frontier = scaling.compute_frontier(curves)
      frontier_fit = _try(lambda: scaling.fit_power_law(*frontier))
  return fits, frontier, frontier_fit


def _try(fn):
  try:
    return fn()
  except ValueError:
    return None


def _write_outputs(
  workdir, rows, interp, curves, found, fits, frontier, frontier_fit, reference, grid
) -> list[pathlib.Path]:
  tables.write_csv(workdir / "results.csv", rows, COLUMNS)
  (workdir / "results.md").write_text(tables.markdown(rows, COLUMNS) + "\n")
  interp_rows = [
    {"family": f, **{k: v for k, v in d.items() if k != "probe_tasks"}} for f, d in interp.items()
  ]
  tables.write_csv(workdir / "interpretability.csv", interp_rows, INTERP_COLUMNS)
  recovery = [{"family": f, **r} for f, rs in curves.items() for r in rs]
  if recovery:
    tables.write_csv(workdir / "recovery.csv", recovery, list(recovery[0]))
  probe_rows = [{"family": f, **t} for f, d in interp.items() for t in d.get("probe_tasks", [])]
  if probe_rows:
    tables.write_csv(workdir / "probes.csv", probe_rows, list(probe_rows[0]))
  fig = workdir / "figures"
  fig.mkdir(exist_ok=True)
  ref_width = grid.reference_width
  families = {f: d for f, d in interp.items() if "n2g_f1" in d}
  figures = [
    plots.l0_fvu_frontier(rows, ref_width, fig / "l0_fvu_frontier.png"),
    plots.delta_ce_vs_fvu(rows, fig / "delta_ce_vs_fvu.png"),
    plots.dead_vs_width(rows, fig / "dead_vs_width.png"),
    plots.progressive_recovery(curves, fig / "progressive_recovery.png"),
    plots.bars(
      {f: {"probe loss": d["probe_loss"]} for f, d in families.items() if "probe_loss" in d},
      "mean held-out CE (nats)",
      "Probe loss (lower is better)",
      fig / "probe_loss.png",
      baseline=interp.get("neurons (d_model basis)", {}).get("probe_loss"),
      baseline_label="model neurons",
    ),
    plots.bars(
      {f: {m: d[f"n2g_{m}"] for m in ("precision", "recall", "f1")} for f, d in families.items()},
      "mean over latents",
      "N2G explanations on held-out text",
      fig / "n2g.png",
    ),
    plots.scaling(fits["points"], fits, frontier, frontier_fit, fig / "scaling.png"),
  ]
  page = _results_page(rows, interp, found, fits, frontier_fit, reference, grid, figures, workdir)
  (workdir / "RESULTS.md").write_text(page)
  (workdir / "findings.json").write_text(
    json.dumps([dataclasses.asdict(f) for f in found], indent=2) + "\n"
  )
  return figures


def _results_page(
  rows, interp, found, fits, frontier_fit, reference, grid, figures, workdir
) -> str:
  ref = [r for r in rows if r["is_reference"]]
  lines = [
    "# Activation-function ablation: results",
    "",
    "Regenerated by `python -m experiments.ablation`; every number below comes from this run.",
    f"Clean CE {reference['ce_clean']:.4f}, zero-ablation CE {reference['ce_zero']:.4f}, "
    f"mean-ablation CE {reference['ce_mean']:.4f} nats/token on held-out text.",
    "",
    "## The TopK paper's findings on our model",
    "",
    findings_lib.markdown(found),
    "",
    f"## Every architecture at the reference setting (n = {grid.reference_width})",
    "",
    tables.markdown(
      ref,
      (
        "family",
        "label",
        "l0",
        "fvu",
        "delta_ce",
        "ce_recovered",
        "kl_score",
        "dead_fraction",
        "dead_held_out",
        "shrinkage",
      ),
    ),
    "",
    "## Interpretability and shrinkage at the reference setting",
    "",
    tables.markdown(
      [{"family": f, **d} for f, d in interp.items()],
      [c for c in INTERP_COLUMNS if c != "label"],
    ),
    "",
    "## Scaling laws (reference family)",
    "",
  ]
  for name, fit, x in (
    ("L(n) at the reference k", fits.get("n"), "n"),
    ("L(n, k)", fits.get("joint"), None),
    ("L(C), C = latents × training tokens", frontier_fit, "C"),
  ):
    if fit is None:
      text = "not enough points"
    else:
      text = fit.describe(x=x) if x else fit.describe()
    lines.append(f"- {name}: " + text.replace("\n", "; "))
  lines += ["", "## Figures", ""]
  lines += [f"![{p.stem}]({p.relative_to(workdir)})" for p in figures]
  lines += [
    "",
    "Full tables: results.csv (every SAE), interpretability.csv, probes.csv, recovery.csv.",
    "",
  ]
  return "\n".join(lines)
