"""The study's outputs: tables (CSV and markdown), figures, the results page, and a published copy.

RESULTS.md states each TopK-paper finding with its verdict and numbers, then the reference
setting of every family, interpretability and shrinkage, the scaling-law fits and the figures.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import shutil

from jaxsae import tables
from jaxsae.ablation import findings as findings_lib
from jaxsae.ablation import plots
from jaxsae.errors import JaxsaeError

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


PUBLISHED = (
  "RESULTS.md",
  "results.csv",
  "interpretability.csv",
  "probes.csv",
  "recovery.csv",
  "figures",
)


FINDINGS_HEADING = "## The TopK paper's findings on our model"


def read_results(path: str | pathlib.Path) -> list[dict]:
  """The rows of a study's results.csv, numbers parsed (empty cells become None)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise JaxsaeError(
      f"no results at {path}: run the study (python -m experiments.ablation --workdir=DIR) and "
      "pass DIR/results.csv, or the published docs/ablation/results.csv"
    )
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  missing = [c for c in ("label", "family", "width", "l0", "fvu") if rows and c not in rows[0]]
  if not rows or missing:
    raise JaxsaeError(f"{path} is not a study's results.csv (missing columns {missing or 'all'})")
  return [
    {k: _number(v) if k not in ("label", "family") else v for k, v in r.items()} for r in rows
  ]


def _number(text: str):
  if text == "":
    return None
  if text in ("True", "False"):
    return text == "True"
  try:
    return int(text)
  except ValueError:
    try:
      return float(text)
    except ValueError:
      return text


def findings_section(results_md: str) -> str:
  """The findings section of a RESULTS.md page (heading to the next "## " heading)."""
  start = results_md.find(FINDINGS_HEADING)
  if start < 0:
    raise JaxsaeError(f'no "{FINDINGS_HEADING}" section: pass a RESULTS.md the study wrote')
  end = results_md.find("\n## ", start + len(FINDINGS_HEADING))
  return results_md[start : end if end >= 0 else None].strip() + "\n"


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


def write(
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
  page = results_page(rows, interp, found, fits, frontier_fit, reference, grid, figures, workdir)
  (workdir / "RESULTS.md").write_text(page)
  (workdir / "findings.json").write_text(
    json.dumps([dataclasses.asdict(f) for f in found], indent=2) + "\n"
  )
  return figures


def results_page(rows, interp, found, fits, frontier_fit, reference, grid, figures, workdir) -> str:
  ref = [r for r in rows if r["is_reference"]]
  lines = [
    "# Activation-function ablation: results",
    "",
    "Regenerated by `python -m experiments.ablation`; every number below comes from this run.",
    f"Clean CE {reference['ce_clean']:.4f}, zero-ablation CE {reference['ce_zero']:.4f}, "
    f"mean-ablation CE {reference['ce_mean']:.4f} nats/token on held-out text.",
    "",
    FINDINGS_HEADING,
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
