"""The study's figures: one function per figure, each writing a PNG.

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot, so importing this
module never changes the backend (a notebook keeps its inline plots) and nothing is shown.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def _save(fig, path: pathlib.Path) -> pathlib.Path:
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path


def _subplots(*grid, figsize):
  fig = Figure(figsize=figsize)
  return fig, fig.subplots(*grid)


def _by(rows: Sequence[dict], key: str) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for row in rows:
    out.setdefault(row[key], []).append(row)
  return out


def l0_fvu_frontier(rows, width: int, path) -> pathlib.Path:
  """FVU against L0 per family at one width (the TopK paper's sparsity–reconstruction plane)."""
  fig, ax = _subplots(figsize=(6, 4.2))
  for family, group in _by([r for r in rows if r["width"] == width], "family").items():
    group = sorted(group, key=lambda r: r["l0"])
    ax.plot([r["l0"] for r in group], [r["fvu"] for r in group], "o-", label=family)
  ax.set(xscale="log", yscale="log", xlabel="L0 (held-out)", ylabel="FVU (held-out)")
  ax.set_title(f"L0–FVU frontier, n = {width}")
  ax.legend(fontsize=7)
  return _save(fig, path)


def delta_ce_vs_fvu(rows, path) -> pathlib.Path:
  fig, ax = _subplots(figsize=(6, 4.2))
  for family, group in _by(rows, "family").items():
    ax.scatter([r["fvu"] for r in group], [r["delta_ce"] for r in group], label=family, s=18)
  ax.set(xscale="log", yscale="log", xlabel="FVU", ylabel="ΔCE (nats)")
  ax.set_title("Downstream loss against reconstruction")
  ax.legend(fontsize=7)
  return _save(fig, path)


def dead_vs_width(rows, path) -> pathlib.Path:
  """Dead fraction against width for families trained at several widths (each width's reference
  value): dead in the training window (solid) and never firing on held-out rows (dashed)."""
  fig, ax = _subplots(figsize=(6, 4.2))
  colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
  families = [(f, g) for f, g in _by(rows, "family").items() if len({r["width"] for r in g}) > 1]
  for (family, group), color in zip(families, colors * 4, strict=False):
    points = []
    for w in sorted({r["width"] for r in group}):
      at = [r for r in group if r["width"] == w]
      ref = ([r for r in at if r.get("is_width_reference")] or at)[0]
      points.append((w, ref["dead_fraction"], ref["dead_held_out"]))
    widths, window, held_out = zip(*points, strict=True)
    ax.plot(widths, window, "o-", color=color, label=f"{family} (training window)")
    ax.plot(widths, held_out, "s--", color=color, label=f"{family} (never fires, held-out)")
  ax.set(xscale="log", xlabel="latents n", ylabel="dead fraction")
  ax.set_title("Dead latents against width")
  ax.legend(fontsize=7)
  return _save(fig, path)


def progressive_recovery(curves: dict[str, list[dict]], path) -> pathlib.Path:
  """MSE-plane curves: TopK(k′) solid, threshold dashed, per family."""
  fig, ax = _subplots(figsize=(6, 4.2))
  colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
  for (family, rows), color in zip(curves.items(), colors * 4, strict=False):
    for kind, style in (("topk", "-"), ("threshold", "--")):
      pts = sorted((r["l0"], r["fvu"]) for r in rows if r["activation"] == kind)
      if pts:
        label = f"{family} {'TopK(k′)' if kind == 'topk' else 'threshold'}"
        ax.plot(*zip(*pts, strict=True), style, color=color, marker=".", label=label)
  ax.set(xscale="log", yscale="log", xlabel="L0 at test time", ylabel="FVU")
  ax.set_title("Progressive recovery")
  ax.legend(fontsize=6, ncol=2)
  return _save(fig, path)


def bars(
  values: dict[str, dict[str, float]],
  ylabel: str,
  title: str,
  path,
  baseline: float | None = None,
  baseline_label: str = "",
) -> pathlib.Path:
  """Grouped bars: values[family][metric]."""
  families = list(values)
  metrics = sorted({m for v in values.values() for m in v})
  x = np.arange(len(families))
  width = 0.8 / max(len(metrics), 1)
  fig, ax = _subplots(figsize=(7, 4.2))
  for i, metric in enumerate(metrics):
    ax.bar(x + i * width, [values[f].get(metric, np.nan) for f in families], width, label=metric)
  if baseline is not None:
    ax.axhline(baseline, color="k", ls="--", lw=1, label=baseline_label)
  ax.set_xticks(x + width * (len(metrics) - 1) / 2, families, rotation=30, ha="right")
  ax.set(ylabel=ylabel, title=title)
  ax.legend(fontsize=7)
  return _save(fig, path)


def scaling(points: Sequence[dict], fits: dict, frontier, frontier_fit, path) -> pathlib.Path:
  """Left: FVU against n per k with the joint fit; right: the compute frontier L(C) and its fit."""
  fig, (left, right) = _subplots(1, 2, figsize=(10, 4.2))
  for k, group in _by(points, "k").items():
    group = sorted(group, key=lambda r: r["width"])
    n = np.array([r["width"] for r in group], float)
    line = left.plot(n, [r["fvu"] for r in group], "o", label=f"k = {k}")[0]
    if fits.get("joint") is not None:
      grid = np.geomspace(n.min(), n.max(), 50)
      left.plot(
        grid, fits["joint"].predict(grid, np.full_like(grid, k)), "-", color=line.get_color()
      )
  left.set(xscale="log", yscale="log", xlabel="latents n", ylabel="FVU (held-out)")
  left.set_title("L(n, k)")
  left.legend(fontsize=7)
  if frontier is not None:
    c, loss = frontier
    right.plot(c, loss, ".", ms=3, label="frontier")
    if frontier_fit is not None:
      right.plot(c, frontier_fit.predict(c), "-", label=frontier_fit.describe(x="C"))
  right.set(xscale="log", yscale="log", xlabel="compute ∝ n × tokens", ylabel="train FVU")
  right.set_title("L(C)")
  right.legend(fontsize=6)
  return _save(fig, path)
