"""The TopK paper's findings, each checked on the study's numbers: a verdict and the evidence.

Each check returns a `Finding` (claim, verdict "holds" / "does not hold" / "inconclusive" (the
effect has nothing to act on in our run) / "not measured", and a sentence with the numbers). Tolerances are stated in the sentences, never hidden.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Finding:
  claim: str
  verdict: str
  evidence: str


def _unmeasured(claim: str, why: str) -> Finding:
  return Finding(claim, "not measured", why)


def interpolate_log(l0s, values, at: float, reach: float = 1.1) -> float:
  """Piecewise-linear in (log L0, log value); the end segments extend up to a factor `reach`
  beyond the measured L0 range, and give nan farther out."""
  order = np.argsort(l0s)
  x, y = np.log(np.asarray(l0s, float)[order]), np.log(np.asarray(values, float)[order])
  t = math.log(at)
  if not x[0] - math.log(reach) <= t <= x[-1] + math.log(reach):
    return float("nan")
  i = int(np.clip(np.searchsorted(x, t) - 1, 0, len(x) - 2))
  slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
  return float(np.exp(y[i] + slope * (t - x[i])))


def topk_beats_relu(rows: Sequence[dict], width: int) -> Finding:
  claim = "TopK's FVU is below ReLU's at matched L0"
  topk = [r for r in rows if r["family"] == "topk" and r["width"] == width]
  relu = [r for r in rows if r["family"] == "relu" and r["width"] == width]
  if not topk or len(relu) < 2:
    return _unmeasured(claim, f"needs TopK and ≥2 ReLU runs at n = {width}")
  pairs = []
  for r in sorted(topk, key=lambda r: r["l0"]):
    other = interpolate_log([q["l0"] for q in relu], [q["fvu"] for q in relu], r["l0"])
    if not math.isnan(other):
      pairs.append((r["l0"], r["fvu"], other))
  if not pairs:
    span = f"{min(q['l0'] for q in relu):.1f}–{max(q['l0'] for q in relu):.1f}"
    return _unmeasured(claim, f"ReLU's L0 range ({span}) does not overlap TopK's; retune λ")
  wins = sum(t < o for _, t, o in pairs)
  detail = "; ".join(f"L0 {l0:.1f}: TopK {t:.3f} vs ReLU {o:.3f}" for l0, t, o in pairs)
  verdict = "holds" if wins == len(pairs) else "does not hold"
  evidence = f"n = {width}, ReLU's FVU interpolated in log–log at TopK's L0 (at most 10% beyond its L0 range) — {detail}."
  return Finding(claim, verdict, evidence)


def auxk_prevents_dead(rows: Sequence[dict]) -> Finding:
  claim = "AuxK + tied init leave fewer dead latents than neither, at the widest setting"
  plain = [r for r in rows if r["family"] == "topk_plain"]
  if not plain:
    return _unmeasured(claim, "no topk_plain run in the grid")
  width = max(r["width"] for r in plain)
  p = plain[[r["width"] for r in plain].index(width)]
  with_aux = [r for r in rows if r["family"] == "topk" and r["width"] == width and r["k"] == p["k"]]
  if not with_aux:
    return _unmeasured(claim, f"no TopK run with k = {p['k']} at n = {width}")
  a = with_aux[0]
  if max(a["dead_fraction"], p["dead_fraction"], a["dead_held_out"], p["dead_held_out"]) == 0:
    verdict = "inconclusive"  # Nothing died without AuxK either: no effect to prevent.
  elif a["dead_fraction"] < p["dead_fraction"] or (
    a["dead_fraction"] == p["dead_fraction"] and a["dead_held_out"] < p["dead_held_out"]
  ):
    verdict = "holds"
  else:
    verdict = "does not hold"
  evidence = (
    f"n = {width}, k = {p['k']}: dead (training window) {a['dead_fraction']:.3f} with AuxK and "
    f"tied init vs {p['dead_fraction']:.3f} without; never firing on held-out "
    f"{a['dead_held_out']:.3f} vs {p['dead_held_out']:.3f}; FVU {a['fvu']:.3f} vs {p['fvu']:.3f}."
  )
  return Finding(claim, verdict, evidence)


def multi_topk_recovers(curves: dict[str, list[dict]], k: int, tolerance=0.01) -> Finding:
  claim = "Multi-TopK's MSE does not rise for k′ from k to 4k, where plain TopK's does"
  if "topk" not in curves or "topk_multi" not in curves:
    return _unmeasured(claim, "needs progressive recovery of topk and topk_multi")

  def series(rows):
    pts = sorted((r["value"], r["mse"]) for r in rows if r["activation"] == "topk")
    return [(kp, m) for kp, m in pts if k <= kp <= 4 * k]

  multi, plain = series(curves["topk_multi"]), series(curves["topk"])
  rise = (
    max(b[1] / a[1] - 1 for a, b in zip(multi, multi[1:], strict=False)) if len(multi) > 1 else 0
  )
  plain_rises = len(plain) > 1 and plain[-1][1] > plain[0][1]
  holds = rise <= tolerance and plain_rises
  fmt = lambda s: ", ".join(f"k′={kp}: {m:.4g}" for kp, m in s)  # noqa: E731
  evidence = (
    f"MSE (SAE units) Multi-TopK [{fmt(multi)}], largest step-to-step change {100 * rise:+.1f}% "
    f"(tolerance {100 * tolerance:.0f}%); TopK [{fmt(plain)}], "
    f"{'rises' if plain_rises else 'does not rise'} from k to 4k."
  )
  return Finding(claim, "holds" if holds else "does not hold", evidence)


def power_law_in_n(fit, k: int, points: Sequence[tuple[int, float]] = ()) -> Finding:
  """`points`: (n, FVU) at this k, quoted so a reader sees where a fit bends."""
  claim = f"MSE follows a power law in n at fixed k (k = {k})"
  if fit is None:
    return _unmeasured(claim, "fewer than three widths at this k")
  lo, hi = fit.intervals.get("alpha", (float("nan"), float("nan")))
  positive = fit.alpha > 0 and not (lo <= 0)
  good = fit.rms_log < 0.05
  data = ", ".join(f"n={n}: {v:.4f}" for n, v in sorted(points))
  evidence = (
    f"FVU {data}; fit {fit.describe(x='n')}; exponent 95% interval {lo:.3f}–{hi:.3f}, RMS "
    f"error {fit.rms_log:.3f} in log FVU over {fit.n_points} widths (holds: exponent > 0 with "
    "its interval above 0, RMS < 0.05)."
  )
  verdict = "holds" if positive and good else "does not hold"
  return Finding(claim, verdict, evidence)


def topk_interpretability(interp: dict[str, dict]) -> list[Finding]:
  out = []
  if "topk" not in interp or "relu" not in interp:
    return [_unmeasured("TopK vs ReLU on probe loss and N2G", "needs both families measured")]
  t, r = interp["topk"], interp["relu"]
  if "probe_loss" in t and "probe_loss" in r:
    out.append(
      Finding(
        "TopK's probe loss is below ReLU's",
        "holds" if t["probe_loss"] < r["probe_loss"] else "does not hold",
        f"mean best-latent held-out CE {t['probe_loss']:.4f} (TopK, L0 {t['l0']:.1f}) vs "
        f"{r['probe_loss']:.4f} (ReLU, L0 {r['l0']:.1f}) nats.",
      )
    )
  for metric in ("precision", "recall"):
    key = f"n2g_{metric}"
    if key in t and key in r:
      out.append(
        Finding(
          f"TopK's N2G {metric} is above ReLU's",
          "holds" if t[key] > r[key] else "does not hold",
          f"mean over explained latents {t[key]:.3f} (TopK) vs {r[key]:.3f} (ReLU).",
        )
      )
  return out


def markdown(findings: Sequence[Finding]) -> str:
  lines = ["| finding | verdict | evidence |", "|---|---|---|"]
  for f in findings:
    lines.append(f"| {f.claim} | **{f.verdict}** | {f.evidence} |")
  return "\n".join(lines)
