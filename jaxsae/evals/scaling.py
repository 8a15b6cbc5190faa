"""Scaling-law fits with 95% intervals, as in the TopK paper (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders").

    power law      L(x) = a·x^(−α) + c                  c ≥ 0 (c = 0 without an irreducible term)
    joint law      L(n, k) = exp(α + β_k·log k + β_n·log n + γ·log k·log n) + exp(ζ + η·log k)
                   (n latents, k active; the paper's L(N, K))
    frontier       L*(C) = min{L of any run at compute C′ ≤ C}   (compute ∝ latents × tokens)

Both fits are least squares on log L (relative errors: losses span orders of magnitude), run by
`scipy.optimize.curve_fit` in a well-conditioned parameterization: log a instead of a, and log x
(log n, log k) centered on its mean, mapped back exactly afterwards. Several starts are tried (a
log-log linear fit with part of min L taken as the irreducible term) and the best kept.

Intervals are Wald intervals: estimate ± t₀.₉₇₅(n − p)·SE, SE from the fit's covariance (the
Jacobian at the optimum scaled by the residual variance), Student-t with n − p degrees of
freedom; a is reported as exp of the interval of log a and c's interval is clipped at 0. With no
degrees of freedom left (n = p points, an exact fit) every interval is (nan, nan); with fewer
points than parameters `fit_power_law` raises and `fit_joint_nk` fits a reduced form.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.optimize
import scipy.stats

from jaxsae.errors import JaxsaeError

LEVEL = 0.95
_NAN_INTERVAL = (math.nan, math.nan)


def _as_positive_1d(values, what: str) -> np.ndarray:
  arr = np.asarray(values, np.float64)
  if arr.ndim != 1:
    raise JaxsaeError(f"{what} must be 1-D, got shape {arr.shape}; pass one value per point")
  if not np.all(np.isfinite(arr)):
    raise JaxsaeError(
      f"{what} holds NaN or Inf values; drop those points (diverged or unfinished runs)"
    )
  if np.any(arr <= 0):
    raise JaxsaeError(
      f"{what} must be positive (the fit is in log space), got min {arr.min():g}; drop the "
      "non-positive points or shift the quantity"
    )
  return arr


def _check_lengths(**arrays: np.ndarray) -> None:
  lengths = {name: len(a) for name, a in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise JaxsaeError(f"mismatched lengths {lengths}; pass one value of each per point")


def _fmt(v: float) -> str:
  return f"{v:.3g}"


def _signed(v: float, what: str = "") -> str:
  return f" {'-' if v < 0 else '+'} {_fmt(abs(v))}{what}"


def _fmt_interval(lo: float, hi: float) -> str:
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "95% CI n/a"
  sep = "–" if lo >= 0 else " to "
  return f"95% CI {_fmt(lo)}{sep}{_fmt(hi)}"


def _wald(theta, cov, n: int) -> tuple[np.ndarray, float]:
  """(half-widths t·SE of each parameter, t), all nan when no degree of freedom is left."""
  dof = n - len(theta)
  se = np.sqrt(np.clip(np.diag(cov), 0, None)) if cov is not None else np.full(len(theta), np.nan)
  if dof < 1 or not np.all(np.isfinite(se)):
    return np.full(len(theta), np.nan), math.nan
  t = float(scipy.stats.t.ppf(0.5 + LEVEL / 2, dof))
  return t * se, t


def _curve_fit(f, xdata, ydata, starts, bounds=(-np.inf, np.inf)):
  """Best (θ, covariance, RSS) of curve_fit over the starts; covariance None if unavailable."""
  best = None
  for p0 in starts:
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OptimizeWarning: covariance not estimable (exact fits)
        theta, cov = scipy.optimize.curve_fit(
          f, xdata, ydata, p0=p0, bounds=bounds, xtol=1e-14, ftol=1e-14, gtol=1e-14, maxfev=20000
        )
    except (RuntimeError, ValueError, FloatingPointError):
      continue
    rss = float(np.sum((f(xdata, *theta) - ydata) ** 2))
    if np.isfinite(rss) and (best is None or rss < best[2]):
      best = (theta, cov if np.all(np.isfinite(cov)) else None, rss)
  if best is None:
    raise JaxsaeError(
      "the scaling-law fit did not converge from any start; check that the loss decreases with "
      "the variable, or fit fewer parameters"
    )
  return best


@dataclasses.dataclass
class PowerLawFit:
  """y = a·x^(−alpha) + c, with 95% intervals and the RMS of the residuals of log y."""

  a: float
  alpha: float
  c: float
  intervals: dict[str, tuple[float, float]]
  n_points: int
  rms_log: float
  irreducible: bool = True

  def predict(self, x) -> np.ndarray:
    return self.a * np.asarray(x, np.float64) ** (-self.alpha) + self.c

  def describe(self, y: str = "L", x: str = "N") -> str:
    """E.g. "L = 0.52·N^-0.31 (95% CI 0.22–0.40) + 0.03" (the interval is of the exponent α)."""
    text = (
      f"{y} = {_fmt(self.a)}·{x}^{_fmt(-self.alpha)} ({_fmt_interval(*self.intervals['alpha'])})"
    )
    return text + (f" + {_fmt(self.c)}" if self.irreducible else "")


def fit_power_law(x, y, irreducible: bool = True) -> PowerLawFit:
  """Fit y = a·x^(−α) + c (c ≥ 0; c = 0 when not `irreducible`) by least squares on log y.

  Needs at least as many points as parameters (3, or 2 without c); with exactly that many the
  fit is exact and the intervals are (nan, nan).
  """
  x, y = _as_positive_1d(x, "x"), _as_positive_1d(y, "y")
  _check_lengths(x=x, y=y)
  p = 3 if irreducible else 2
  if len(x) < p:
    raise JaxsaeError(
      f"{len(x)} point(s) cannot determine {p} parameters; add points"
      + (" or pass irreducible=False" if irreducible else "")
    )
  if np.ptp(np.log(x)) == 0:
    raise JaxsaeError("all x are equal; a power law needs points at two or more values of x")

  # y = A·(x/x0)^(−α) + c with x0 the geometric mean of x and c in units of min y.
  log_x0, y_scale = float(np.mean(np.log(x))), float(np.min(y))
  u, log_y = np.log(x) - log_x0, np.log(y)

  def model(u, log_A, alpha, c_rel=0.0):
    return np.log(np.exp(log_A - alpha * u) + c_rel * y_scale)

  def start(frac):
    slope, intercept = np.polyfit(u, np.log(y - frac * y_scale), 1)
    return [intercept, -slope] + ([frac] if irreducible else [])

  if irreducible:
    starts = [start(f) for f in (0.0, 0.5, 0.9, 0.99)]
    bounds = ([-np.inf, -np.inf, 0.0], [np.inf, np.inf, np.inf])
    theta, cov, rss = _curve_fit(model, u, log_y, starts, bounds)
  else:
    theta, cov, rss = _curve_fit(lambda u, la, al: model(u, la, al), u, log_y, [start(0.0)])
  half, t = _wald(theta, cov, len(x))

  log_A, alpha = float(theta[0]), float(theta[1])
  c = float(theta[2]) * y_scale if irreducible else 0.0
  # log a = log A + α·log x0: its interval through the covariance of (log A, α).
  log_a = log_A + alpha * log_x0
  if np.isnan(half[0]):
    intervals = {"a": _NAN_INTERVAL, "alpha": _NAN_INTERVAL}
  else:
    grad = np.array([1.0, log_x0])
    half_log_a = t * math.sqrt(grad @ cov[:2, :2] @ grad)
    intervals = {
      "a": (math.exp(log_a - half_log_a), math.exp(log_a + half_log_a)),
      "alpha": (alpha - float(half[1]), alpha + float(half[1])),
    }
  if irreducible:
    intervals["c"] = (
      _NAN_INTERVAL
      if np.isnan(half[2])
      else (max(0.0, c - float(half[2]) * y_scale), c + float(half[2]) * y_scale)
    )
  return PowerLawFit(
    a=math.exp(log_a),
    alpha=alpha,
    c=c,
    intervals=intervals,
    n_points=len(x),
    rms_log=math.sqrt(rss / len(x)),
    irreducible=irreducible,
  )


JOINT_PARAMS = ("alpha", "beta_k", "beta_n", "gamma", "zeta", "eta")
REDUCED_PARAMS = ("alpha", "beta_k", "beta_n")


@dataclasses.dataclass
class JointFit:
  """L(n, k) = exp(alpha + beta_k·log k + beta_n·log n + gamma·log k·log n) + exp(zeta + eta·log k).

  `form` is "full" (all six parameters) or "reduced" (gamma = 0, no irreducible term: zeta = −inf,
  eta = 0), fitted when there were fewer points than the six parameters; `note` says why.
  `intervals` holds the fitted parameters only.
  """

  alpha: float
  beta_k: float
  beta_n: float
  gamma: float
  zeta: float
  eta: float
  intervals: dict[str, tuple[float, float]]
  n_points: int
  rms_log: float
  form: str
  note: str = ""

  @property
  def params(self) -> dict[str, float]:
    return {name: getattr(self, name) for name in JOINT_PARAMS}

  def predict(self, n, k) -> np.ndarray:
    log_n, log_k = np.log(np.asarray(n, np.float64)), np.log(np.asarray(k, np.float64))
    reducible = self.alpha + self.beta_k * log_k + self.beta_n * log_n
    reducible = reducible + self.gamma * log_k * log_n
    return np.exp(reducible) + np.exp(self.zeta + self.eta * log_k)

  def describe(self) -> str:
    names = JOINT_PARAMS if self.form == "full" else REDUCED_PARAMS
    p = self.params
    head = f"L(n, k) = exp({_fmt(p['alpha'])}{_signed(p['beta_k'], '·log k')}"
    head += _signed(p["beta_n"], "·log n")
    if self.form == "full":
      head += f"{_signed(p['gamma'], '·log k·log n')}) + exp({_fmt(p['zeta'])}"
      head += _signed(p["eta"], "·log k")
    head += ")"
    lines = [f"{head}  [{self.form} form, {self.n_points} points, RMS log {_fmt(self.rms_log)}]"]
    lines += [
      f"  {name} = {_fmt(p[name])} ({_fmt_interval(*self.intervals[name])})" for name in names
    ]
    if self.note:
      lines.append(f"  note: {self.note}")
    return "\n".join(lines)


def _joint_model(uv, a0, bk, bn, g, z0=None, e=None):
  """log L in centered coordinates u = log n − mean, v = log k − mean."""
  u, v = uv
  log_reducible = a0 + bk * v + bn * u + g * u * v
  if z0 is None:
    return log_reducible
  return np.logaddexp(log_reducible, z0 + e * v)


def _uncenter(theta_c, n_bar: float, k_bar: float) -> np.ndarray:
  """Centered parameters → (α, β_k, β_n, γ, ζ, η); linear, so covariances map by its matrix."""
  a0, bk, bn, g, z0, e = theta_c
  return np.array(
    [
      a0 - bk * k_bar - bn * n_bar + g * k_bar * n_bar,
      bk - g * n_bar,
      bn - g * k_bar,
      g,
      z0 - e * k_bar,
      e,
    ]
  )


def fit_joint_nk(n, k, loss) -> JointFit:
  """Fit the TopK paper's L(n, k) (module docstring) by least squares on log L.

  With fewer than six points it fits the reduced form exp(α + β_k·log k + β_n·log n) (needs
  three); with exactly six the full fit is exact and its intervals are (nan, nan).
  """
  n = _as_positive_1d(n, "n (latents)")
  k = _as_positive_1d(k, "k (active latents)")
  loss = _as_positive_1d(loss, "loss")
  _check_lengths(n=n, k=k, loss=loss)
  if len(np.unique(n)) < 2 or len(np.unique(k)) < 2:
    raise JaxsaeError(
      "the joint law needs two or more distinct values of both n and k; with one of them fixed, "
      "fit the other with fit_power_law"
    )
  points = len(n)
  if points < len(REDUCED_PARAMS):
    raise JaxsaeError(
      f"{points} point(s) cannot determine even the reduced joint law (3 parameters)"
    )
  n_bar, k_bar = float(np.mean(np.log(n))), float(np.mean(np.log(k)))
  uv = np.stack([np.log(n) - n_bar, np.log(k) - k_bar])
  log_loss = np.log(loss)
  if np.linalg.matrix_rank(np.stack([np.ones(points), uv[0], uv[1]], axis=1)) < 3:
    raise JaxsaeError(
      "log n and log k are collinear over these points (k ∝ n^p); add points off that line"
    )

  if points < len(JOINT_PARAMS):
    form = "reduced"
    note = (
      f"{points} points < {len(JOINT_PARAMS)} parameters: fitted exp(α + β_k·log k + β_n·log n) "
      "without the interaction γ and the irreducible term exp(ζ + η·log k)"
    )
    # Linear in log space: ordinary least squares, covariance s²·(XᵀX)⁻¹ with s² = RSS/(n − 3).
    design = np.stack([np.ones(points), uv[1], uv[0]], axis=1)
    theta3 = np.linalg.lstsq(design, log_loss, rcond=None)[0]
    rss = float(np.sum((design @ theta3 - log_loss) ** 2))
    theta_c = np.concatenate([theta3, [0.0, -np.inf, 0.0]])
    cov_c = None
    if points > 3:
      cov_c = np.zeros((6, 6))
      cov_c[:3, :3] = rss / (points - 3) * np.linalg.inv(design.T @ design)
    p = 3
  else:
    form, note, p = "full", "", 6
    design = np.stack([np.ones(points), uv[1], uv[0], uv[0] * uv[1]], axis=1)
    starts = []
    for frac in (0.0, 0.3, 0.6, 0.9):
      target = np.log(loss - frac * loss.min()) if frac > 0 else log_loss
      coef, *_ = np.linalg.lstsq(design, target, rcond=None)
      floor = math.log(frac * loss.min()) if frac > 0 else math.log(1e-3 * loss.min())
      starts.append(np.concatenate([coef, [floor, 0.0]]))
    theta_c, cov_c, rss = _curve_fit(_joint_model, uv, log_loss, starts)

  theta = _uncenter(theta_c, n_bar, k_bar)  # reduced: ζ stays −inf (η = 0), γ stays 0
  names = JOINT_PARAMS if form == "full" else REDUCED_PARAMS
  intervals = {name: _NAN_INTERVAL for name in names}
  if cov_c is not None:
    # The map centered → original is linear: its matrix M has columns _uncenter(e_i).
    M = np.stack([_uncenter(col, n_bar, k_bar) for col in np.eye(6)], axis=1)
    cov = M @ cov_c @ M.T
    half, _ = _wald(np.zeros(p), cov[:p, :p], points)
    intervals = {
      name: (float(theta[i] - half[i]), float(theta[i] + half[i])) for i, name in enumerate(names)
    }
  return JointFit(
    **dict(zip(JOINT_PARAMS, (float(t) for t in theta), strict=True)),
    intervals=intervals,
    n_points=points,
    rms_log=math.sqrt(rss / points),
    form=form,
    note=note,
  )


def compute_frontier(
  curves: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
  """(C, L): the lower envelope of training curves (compute, loss), for `fit_power_law`.

  C holds every compute value of any curve, sorted and unique; L[i] is the least loss any run
  reached at compute ≤ C[i], so L is non-increasing. Compute ∝ latents × tokens seen.
  """
  if len(curves) == 0:
    raise JaxsaeError("no training curves given; pass a list of (compute, loss) arrays")
  all_c, all_l = [], []
  for i, (c, loss) in enumerate(curves):
    c = _as_positive_1d(c, f"compute of curve {i}")
    loss = _as_positive_1d(loss, f"loss of curve {i}")
    _check_lengths(**{f"compute of curve {i}": c, f"loss of curve {i}": loss})
    all_c.append(c)
    all_l.append(loss)
  c, loss = np.concatenate(all_c), np.concatenate(all_l)
  order = np.lexsort((loss, c))
  c, envelope = c[order], np.minimum.accumulate(loss[order])
  last = np.r_[c[1:] != c[:-1], True]  # the last row of each compute value has its envelope
  return c[last], envelope[last]
