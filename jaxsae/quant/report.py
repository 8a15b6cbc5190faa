"""The W8A8 sweep (float, naive and smoothed over α, per activation mode) and its figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxsae.quant import linear_inputs
from jaxsae.quant.stats import ChannelStats
from jaxsae.quant.w8a8 import Evaluator, Scheme

COLUMNS = ("model", "weights", "activations", "smoothing", "alpha", "loss", "Δloss", "bits/byte")


def sweep(
  evaluator: Evaluator,
  model_name: str,
  alphas: Sequence[float],
  activation_modes: Sequence[str],
  weights: str = "per_channel",
  smooth_sites: tuple[str, ...] = ("attn.in", "mlp.in"),
  on_row=None,
) -> list[dict]:
  """Rows: the float model, then per activation mode naive W8A8 and smoothed W8A8 at each α.
  Δloss is the increase over float in nats per token. `on_row(row)` is called as rows arrive."""
  rows = []

  def add(row):
    rows.append(row)
    if on_row is not None:
      on_row(row)

  base = evaluator.float_loss()
  add({"model": model_name, "weights": "float", "activations": "float", "smoothing": "none",
       "alpha": "", "loss": base.loss, "Δloss": 0.0, "bits/byte": float(base.bits_per_byte),
       "tokens": base.tokens})  # fmt: skip
  for mode in activation_modes:
    for alpha in (None, *alphas):
      scheme = Scheme(weights, mode, alpha, tuple(smooth_sites))
      result = evaluator.scheme_loss(scheme)
      add({
        "model": model_name,
        "weights": weights,
        "activations": mode,
        "smoothing": "naive" if alpha is None else "smoothed",
        "alpha": "" if alpha is None else float(alpha),
        "loss": result.loss,
        "Δloss": result.loss - base.loss,
        "bits/byte": float(result.bits_per_byte),
        "tokens": result.tokens,
      })  # fmt: skip
  return rows


def best_rows(rows: Sequence[dict]) -> list[dict]:
  """Per model: float, then per activation mode naive W8A8 and the best smoothed α."""
  out = []
  for model in dict.fromkeys(r["model"] for r in rows):
    group = [r for r in rows if r["model"] == model]
    out += [r for r in group if r["smoothing"] == "none"]
    for mode in dict.fromkeys(r["activations"] for r in group if r["smoothing"] != "none"):
      by_mode = [r for r in group if r["activations"] == mode]
      out += [r for r in by_mode if r["smoothing"] == "naive"]
      smoothed = [r for r in by_mode if r["smoothing"] == "smoothed"]
      if smoothed:
        out.append(min(smoothed, key=lambda r: r["loss"]))
  return out


def sweep_figure(rows: Sequence[dict]) -> Figure:
  """Δloss over float against α, one line per activation mode, naive W8A8 dashed at α = 0's
  left; one panel per model."""
  models = list(dict.fromkeys(r["model"] for r in rows))
  fig = Figure(figsize=(5.5 * len(models), 4), layout="constrained")
  axes = fig.subplots(1, len(models), squeeze=False)[0]
  for ax, model in zip(axes, models, strict=True):
    group = [r for r in rows if r["model"] == model and r["smoothing"] != "none"]
    for i, mode in enumerate(dict.fromkeys(r["activations"] for r in group)):
      color = f"C{i}"
      smoothed = [r for r in group if r["activations"] == mode and r["smoothing"] == "smoothed"]
      naive = [r for r in group if r["activations"] == mode and r["smoothing"] == "naive"]
      if smoothed:
        ax.plot([r["alpha"] for r in smoothed], [r["Δloss"] for r in smoothed], "o-",
                color=color, label=f"{mode}, smoothed")  # fmt: skip
      if naive:
        ax.axhline(naive[0]["Δloss"], color=color, ls="--", label=f"{mode}, naive")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("SmoothQuant α (migration strength)")
    ax.set_ylabel("test loss − float loss (nats/token)")
    ax.set_title(f"{model}: W8A8 fake quantization")
    ax.legend(fontsize=7)
  return fig


def outlier_figure(stats: ChannelStats, n_layers: int) -> Figure:
  """Per linear-input site: a layer × channel heat map of log10 max|x_j| (outlier channels show
  as bright columns), and each layer's channel maxima sorted, against the median."""
  sites = linear_inputs.SITES
  fig = Figure(figsize=(12, 2.6 * len(sites)), layout="constrained")
  axes = fig.subplots(len(sites), 2, width_ratios=(3, 1), squeeze=False)
  for (heat, curve), site in zip(axes, sites, strict=True):
    hooks = linear_inputs.all_hooks(n_layers, (site,))
    grid = np.stack([stats.absmax[h] for h in hooks])
    image = heat.imshow(np.log10(np.maximum(grid, 1e-8)), aspect="auto", interpolation="nearest",
                        cmap="magma")  # fmt: skip
    heat.set_ylabel("layer")
    heat.set_xlabel(f"{site} channel" + (" (head × dim)" if site == "attn.z" else ""))
    heat.set_title(f"{site}: log10 max|x| per channel")
    fig.colorbar(image, ax=heat, fraction=0.03)
    for layer, row in enumerate(grid):
      curve.plot(np.sort(row)[::-1] / max(np.median(row), 1e-12), label=f"layer {layer}")
    curve.axhline(6.0, color="k", ls=":", lw=0.8)
    curve.set_yscale("log")
    curve.set_xscale("log")
    curve.set_xlabel("channel rank")
    curve.set_ylabel("max|x| / median")
    curve.set_title(f"{site}: sorted maxima")
    if n_layers <= 12:
      curve.legend(fontsize=6)
  return fig
