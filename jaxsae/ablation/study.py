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
import pathlib

import jax
import ml_collections
import numpy as np

from jaxsae import main_job, run_log
from jaxsae.ablation import config as config_lib
from jaxsae.ablation import findings as findings_lib
from jaxsae.ablation import grid as grid_lib
from jaxsae.ablation import interpret, measure, report
from jaxsae.evals import downstream, scaling
from jaxsae.models import pretrained
from jaxsae.sae import train as train_lib


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
  members = grid_lib.member_rows(result.groups, grid)
  # Tokens each SAE is measured on: the held-out store, then the spliced forward passes.
  per_sae = len(data.held_out) + data.eval_windows.size
  bar = run_log.progress(per_sae * len(members), desc="measure SAEs")
  for member in members:
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
    bar.update(per_sae)
  bar.close()
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
    figures = report.write(
      workdir, rows, interp, curves, found, fits, frontier, frontier_fit, reference, grid
    )
  return StudyResult(rows, interp, curves, found, figures)


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
  references = [r for r in rows if r["is_reference"]]
  # Per family: probes, N2G over the held-out store, refinement and ablations.
  per_family = len(data.held_out) + (probe_data.n_tokens if probe_data is not None else 0)
  bar = run_log.progress(per_family * len(references), desc="interpret")
  for row in references:
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
      probe = measure.probe_report(sae_config, variables, scale, probe_data)
      out["probe_loss"] = probe.probe_loss
      out["probe_tasks"] = probe.rows()
    encode = measure.encoder(sae_config, scale, variables)
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
    bar.update(per_family)
  bar.close()
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
