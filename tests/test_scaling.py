"""Scaling-law fits: known laws recovered from synthetic data, intervals that cover the truth."""

import math

import numpy as np
import pytest

from jaxsae.errors import JaxsaeError
from jaxsae.evals import scaling

X = np.logspace(3, 8, 12)


def test_exact_power_law_with_irreducible_term_is_recovered():
  fit = scaling.fit_power_law(X, 2.0 * X**-0.5 + 0.1)
  assert fit.a == pytest.approx(2.0, abs=1e-3)
  assert fit.alpha == pytest.approx(0.5, abs=1e-3)
  assert fit.c == pytest.approx(0.1, abs=1e-3)
  assert fit.n_points == 12 and fit.rms_log < 1e-6
  assert fit.predict([1e4]) == pytest.approx(2.0 * 1e4**-0.5 + 0.1, rel=1e-6)
  assert fit.describe() == "L = 2·N^-0.5 (95% CI 0.5–0.5) + 0.1"


def test_noisy_power_law_intervals_cover_the_truth():
  rng = np.random.default_rng(0)
  y = (2.0 * X**-0.5 + 0.1) * np.exp(0.02 * rng.standard_normal(len(X)))
  fit = scaling.fit_power_law(X, y)
  for name, true in (("a", 2.0), ("alpha", 0.5), ("c", 0.1)):
    lo, hi = fit.intervals[name]
    assert lo < true < hi, (name, lo, hi)
  lo, hi = fit.intervals["alpha"]
  assert 0 < hi - lo < 0.5  # informative, not vacuous
  assert 0.005 < fit.rms_log < 0.05  # about the noise level
  assert "95% CI" in fit.describe(y="MSE", x="C") and fit.describe(y="MSE", x="C").startswith("MSE")


def test_pure_power_law_without_irreducible_term():
  rng = np.random.default_rng(1)
  y = 3.0 * X**-0.3 * np.exp(0.01 * rng.standard_normal(len(X)))
  fit = scaling.fit_power_law(X, y, irreducible=False)
  assert fit.c == 0.0 and "c" not in fit.intervals
  assert fit.alpha == pytest.approx(0.3, abs=0.01)
  assert fit.intervals["alpha"][0] < 0.3 < fit.intervals["alpha"][1]
  assert fit.intervals["a"][0] < 3.0 < fit.intervals["a"][1]
  assert "+" not in fit.describe()
  # Exact data: the log-log line.
  exact = scaling.fit_power_law(X, 3.0 * X**-0.3, irreducible=False)
  assert (exact.a, exact.alpha) == pytest.approx((3.0, 0.3), rel=1e-6)


def test_as_many_points_as_parameters_fit_exactly_with_nan_intervals():
  x = np.array([1e3, 1e4, 1e5])
  fit = scaling.fit_power_law(x, 2.0 * x**-0.5 + 0.1)
  assert fit.alpha == pytest.approx(0.5, abs=1e-3)
  assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in fit.intervals.values())
  assert "CI n/a" in fit.describe()
  # Two points: too few for three parameters, enough for two.
  with pytest.raises(JaxsaeError, match="irreducible=False"):
    scaling.fit_power_law(x[:2], [1.0, 0.5])
  assert scaling.fit_power_law(x[:2], [1.0, 0.5], irreducible=False).alpha == pytest.approx(
    math.log10(2)
  )


@pytest.mark.parametrize(
  "x, y, match",
  [
    ([1.0, 2.0, 0.0, 4.0], [1.0, 0.5, 0.3, 0.2], "positive"),
    ([1.0, 2.0, 3.0, 4.0], [1.0, -0.5, 0.3, 0.2], "positive"),
    ([1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 0.3, 0.2], "NaN"),
    ([1.0, 2.0, 3.0], [1.0, 0.5, 0.3, 0.2], "mismatched lengths"),
    ([2.0, 2.0, 2.0, 2.0], [1.0, 0.5, 0.3, 0.2], "all x are equal"),
  ],
)
def test_bad_input_is_a_user_error(x, y, match):
  with pytest.raises(JaxsaeError, match=match):
    scaling.fit_power_law(x, y)


TRUE_JOINT = dict(alpha=1.0, beta_k=-0.3, beta_n=-0.25, gamma=0.02, zeta=-3.0, eta=0.1)


def _joint_law(n, k, p=TRUE_JOINT):
  ln, lk = np.log(n), np.log(k)
  reducible = p["alpha"] + p["beta_k"] * lk + p["beta_n"] * ln + p["gamma"] * lk * ln
  return np.exp(reducible) + np.exp(p["zeta"] + p["eta"] * lk)


def _grid():
  n, k = np.meshgrid(2.0 ** np.arange(10, 17), 2.0 ** np.arange(4, 9))
  return n.ravel(), k.ravel()


def test_joint_law_recovers_its_parameters():
  n, k = _grid()
  fit = scaling.fit_joint_nk(n, k, _joint_law(n, k))
  assert fit.form == "full" and fit.note == ""
  for name, true in TRUE_JOINT.items():
    assert fit.params[name] == pytest.approx(true, abs=1e-4), name
  assert fit.predict(3000.0, 20.0) == pytest.approx(_joint_law(3000.0, 20.0), rel=1e-6)
  rng = np.random.default_rng(0)
  noisy = scaling.fit_joint_nk(n, k, _joint_law(n, k) * np.exp(0.01 * rng.standard_normal(len(n))))
  for name, true in TRUE_JOINT.items():
    lo, hi = noisy.intervals[name]
    assert lo < true < hi, (name, lo, hi)
  text = noisy.describe()
  assert text.startswith("L(n, k) = exp(") and "full form, 35 points" in text and "gamma =" in text


def test_joint_law_with_few_points_fits_the_reduced_form():
  # Five points from a law with no interaction and no irreducible term: exactly the reduced form.
  reduced = dict(alpha=0.5, beta_k=-0.2, beta_n=-0.3, gamma=0.0, zeta=-np.inf, eta=0.0)
  n = np.array([1024.0, 2048.0, 4096.0, 8192.0, 16384.0])
  k = np.array([8.0, 32.0, 16.0, 64.0, 8.0])
  fit = scaling.fit_joint_nk(n, k, _joint_law(n, k, reduced))
  assert fit.form == "reduced" and "5 points < 6 parameters" in fit.note
  assert (fit.alpha, fit.beta_k, fit.beta_n) == pytest.approx((0.5, -0.2, -0.3), abs=1e-6)
  assert fit.gamma == 0.0 and fit.zeta == -np.inf
  assert set(fit.intervals) == {"alpha", "beta_k", "beta_n"}
  assert fit.predict(n, k) == pytest.approx(_joint_law(n, k, reduced), rel=1e-6)
  assert "reduced form" in fit.describe() and "gamma" not in fit.describe()
  # Three points: an exact reduced fit, no intervals.
  three = scaling.fit_joint_nk(n[:3], k[:3], _joint_law(n[:3], k[:3], reduced))
  assert three.beta_n == pytest.approx(-0.3, abs=1e-6)
  assert all(math.isnan(lo) for lo, _ in three.intervals.values())


def test_joint_law_bad_input():
  n, k = _grid()
  with pytest.raises(JaxsaeError, match="distinct values"):
    scaling.fit_joint_nk(np.full(5, 1024.0), [4.0, 8, 16, 32, 64], np.ones(5))
  with pytest.raises(JaxsaeError, match="collinear"):
    scaling.fit_joint_nk([1.0, 2, 4, 8], [2.0, 4, 8, 16], [1.0, 0.5, 0.3, 0.2])
  with pytest.raises(JaxsaeError, match="collinear"):  # k = n/32: enough points, still one line
    scaling.fit_joint_nk(n[:7], n[:7] / 32, _joint_law(n[:7], n[:7] / 32))
  with pytest.raises(JaxsaeError, match="mismatched"):
    scaling.fit_joint_nk(n, k[:-1], _joint_law(n, k))
  with pytest.raises(JaxsaeError, match="positive"):
    scaling.fit_joint_nk(n, k, -_joint_law(n, k))


def test_compute_frontier_is_the_lower_envelope_of_crossing_curves():
  # A small run is ahead early; a large one crosses it at C = 3 and leads after.
  small = ([1.0, 2.0, 3.0, 4.0], [10.0, 6.0, 4.0, 3.5])
  large = ([2.0, 3.0, 4.5, 6.0], [8.0, 5.0, 3.0, 2.0])
  c, loss = scaling.compute_frontier([small, large])
  assert c.tolist() == [1.0, 2.0, 3.0, 4.0, 4.5, 6.0]
  assert loss.tolist() == [10.0, 6.0, 4.0, 3.5, 3.0, 2.0]
  # A run that gets worse later never raises the envelope.
  c, loss = scaling.compute_frontier([([1.0, 2.0, 3.0], [5.0, 2.0, 4.0]), ([2.5], [3.0])])
  assert c.tolist() == [1.0, 2.0, 2.5, 3.0] and loss.tolist() == [5.0, 2.0, 2.0, 2.0]
  with pytest.raises(JaxsaeError):
    scaling.compute_frontier([])
  with pytest.raises(JaxsaeError, match="curve 1"):
    scaling.compute_frontier([small, ([1.0, 2.0], [1.0])])


def test_frontier_feeds_a_power_law_fit():
  # Runs of growing size, each following L = 2·C^-0.5 + 0.1 only at its end (compute-optimal).
  ends = np.logspace(2, 6, 8)
  curves = [(np.array([e / 4, e]), np.array([3.0, 2.0 * e**-0.5 + 0.1])) for e in ends]
  c, loss = scaling.compute_frontier(curves)
  on_law = np.isin(c, ends)
  fit = scaling.fit_power_law(c[on_law], loss[on_law])
  assert fit.alpha == pytest.approx(0.5, abs=1e-3) and fit.c == pytest.approx(0.1, abs=1e-3)
