"""Refinement of SAE codes against a fixed decoder: closed forms, shrinkage undone, support."""

import numpy as np
import pytest

from jaxsae.errors import JaxsaeError
from jaxsae.evals import refine


def _orthonormal_rows(m, d, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, m)))
  return q.T  # m×d, W Wᵀ = I


def _unit_rows(m, d, seed=0):
  w = np.random.default_rng(seed).standard_normal((m, d))
  return w / np.linalg.norm(w, axis=1, keepdims=True)


def _sparse_codes(n, m, k, seed=0):
  rng = np.random.default_rng(seed)
  z = np.zeros((n, m))
  for row in z:
    row[rng.choice(m, k, replace=False)] = rng.uniform(0.5, 2.0, k)
  return z


def test_orthonormal_decoder_fixed_support_matches_the_closed_form():
  m, d, n = 6, 10, 16
  w = _orthonormal_rows(m, d)
  rng = np.random.default_rng(1)
  x, b = rng.standard_normal((n, d)), rng.standard_normal(d)
  z = _sparse_codes(n, m, 3, seed=2)
  expected = np.maximum(0.0, (x - b) @ w.T) * (z != 0)  # z_i = max(0, ⟨x − b, w_i⟩) on the support
  assert float(refine.max_eigenvalue(w)) == pytest.approx(1.0, rel=1e-5)
  for accelerate in (True, False):
    got = np.asarray(refine.refine_latents(z, x, w, b, "fixed", steps=50, accelerate=accelerate))
    np.testing.assert_allclose(got, expected, atol=1e-4)
  assert (expected == 0).any() and (expected[z != 0] == 0).any()  # some support latents clip to 0


def test_a_shrunk_code_grows_back():
  m, d, n = 64, 32, 200
  w = _unit_rows(m, d)
  b = np.random.default_rng(3).standard_normal(d)
  z_true = _sparse_codes(n, m, 4, seed=4)
  x = z_true @ w + b  # noiseless
  report = refine.shrinkage_report(0.5 * z_true, x, w, b, support="fixed", steps=200)
  assert report["activation_growth"] == pytest.approx(2.0, rel=1e-3)
  assert report["norm_growth"] == pytest.approx(4.0, rel=1e-3)
  assert report["mse_before"] > 0.1 and report["mse_after"] < 1e-6 * report["mse_before"]
  assert report["fvu_after"] < 1e-6 < report["fvu_before"]
  assert report["l0_before"] == report["l0_after"] == 4.0
  assert report["shrinkage_before"] < 0.99 and report["shrinkage_after"] == pytest.approx(1.0, 1e-4)
  # The before-numbers are the plain definitions.
  err = np.sum((x - (0.5 * z_true @ w + b)) ** 2, axis=1)
  assert report["mse_before"] == pytest.approx(err.mean(), rel=1e-5)
  assert report["fvu_before"] == pytest.approx(err.sum() / np.sum((x - x.mean(0)) ** 2), rel=1e-5)
  refined = np.asarray(refine.refine_latents(0.5 * z_true, x, w, b, steps=200))
  np.testing.assert_allclose(refined, z_true, atol=1e-4)
  x_hat = np.asarray(refine.refined_reconstruction(0.5 * z_true, x, w, b, steps=200))
  np.testing.assert_allclose(x_hat, x, atol=1e-4)


def test_free_support_adds_a_missing_latent_fixed_support_cannot():
  m, d = 8, 12
  w = _orthonormal_rows(m, d, seed=5)
  b = np.zeros(d)
  z_true = np.zeros((1, m))
  z_true[0, [1, 4]] = [1.5, 0.7]
  x = z_true @ w
  z_sae = np.zeros((1, m))
  z_sae[0, 1] = 1.0  # latent 4 is missing from the SAE's code
  fixed = np.asarray(refine.refine_latents(z_sae, x, w, b, "fixed", steps=20))
  free = np.asarray(refine.refine_latents(z_sae, x, w, b, "free", steps=20))
  assert fixed[0, 4] == 0.0 and fixed[0, 1] == pytest.approx(1.5, abs=1e-5)
  np.testing.assert_allclose(free, z_true, atol=1e-5)
  fixed_report = refine.shrinkage_report(z_sae, x, w, b, "fixed", 20)
  free_report = refine.shrinkage_report(z_sae, x, w, b, "free", 20, l0_threshold=1e-5)
  assert fixed_report["l0_after"] == 1.0 and free_report["l0_after"] == 2.0
  assert fixed_report["mse_after"] == pytest.approx(0.7**2, rel=1e-4)
  assert free_report["mse_after"] < 1e-8
  assert np.isnan(free_report["fvu_after"])  # one token has no variance to explain


@pytest.mark.slow
def test_codes_stay_nonnegative():
  m, d, n = 32, 16, 50
  w = _unit_rows(m, d, seed=6)
  rng = np.random.default_rng(7)
  x, b = rng.standard_normal((n, d)), rng.standard_normal(d)
  z = _sparse_codes(n, m, 5, seed=8)
  for support in ("fixed", "free"):
    got = np.asarray(refine.refine_latents(z, x, w, b, support, steps=100))
    assert got.min() >= 0.0
    assert (got == 0).any()  # the projection is active: x is not a nonnegative combination
    if support == "fixed":
      assert np.all(got[z == 0] == 0)
  # Refinement never makes the reconstruction worse than the start it was given.
  report = refine.shrinkage_report(z, x, w, b, "free", 100)
  assert report["mse_after"] < report["mse_before"]


@pytest.mark.parametrize("support", ["fixed", "free"])
def test_one_step_is_a_projected_gradient_step(support):
  m, d, n = 10, 6, 4
  rng = np.random.default_rng(9)
  w, b, x = rng.standard_normal((m, d)), rng.standard_normal(d), rng.standard_normal((n, d))
  z = np.maximum(rng.standard_normal((n, m)), 0.0)
  lr = 0.05
  step = z - lr * (z @ w + b - x) @ w.T  # gradient of ½‖x − z W − b‖²
  mask = np.ones_like(z, bool) if support == "free" else z != 0
  expected = np.where(mask, np.maximum(step, 0.0), 0.0)
  for accelerate in (True, False):
    got = refine.refine_latents(z, x, w, b, support, steps=1, lr=lr, accelerate=accelerate)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
  # Zero steps: the start, unchanged.
  np.testing.assert_array_equal(
    np.asarray(refine.refine_latents(z, x, w, b, support, 0)), z.astype(np.float32)
  )


def test_default_step_is_one_over_the_largest_eigenvalue():
  w = np.random.default_rng(10).standard_normal((40, 12))
  lam = np.linalg.eigvalsh(w @ w.T).max()
  assert float(refine.max_eigenvalue(w)) == pytest.approx(lam, rel=1e-4)
  z = np.maximum(np.random.default_rng(11).standard_normal((3, 40)), 0.0)
  x = np.random.default_rng(12).standard_normal((3, 12))
  b = np.zeros(12)
  default = refine.refine_latents(z, x, w, b, "free", steps=1)
  explicit = refine.refine_latents(z, x, w, b, "free", steps=1, lr=1.0 / lam)
  np.testing.assert_allclose(np.asarray(default), np.asarray(explicit), rtol=1e-4, atol=1e-5)


def test_chunks_give_the_same_result():
  m, d, n = 16, 8, 37
  w = _unit_rows(m, d, seed=13)
  rng = np.random.default_rng(14)
  x, b = rng.standard_normal((n, d)), rng.standard_normal(d)
  z = _sparse_codes(n, m, 3, seed=15)
  whole = refine.refine_latents(z, x, w, b, "free", steps=30)
  chunked = refine.refine_latents(z, x, w, b, "free", steps=30, chunk_size=10)  # 37 = 3·10 + 7
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-5, atol=1e-6)


def test_bad_input_is_a_user_error():
  w, b = _unit_rows(8, 4), np.zeros(4)
  z, x = np.zeros((3, 8)), np.zeros((3, 4))
  with pytest.raises(JaxsaeError, match="support"):
    refine.refine_latents(z, x, w, b, support="sparse")
  with pytest.raises(JaxsaeError, match="shapes do not agree"):
    refine.refine_latents(z, x[:2], w, b)
  with pytest.raises(JaxsaeError, match="shapes do not agree"):
    refine.refine_latents(z, x, w.T, b)
  with pytest.raises(JaxsaeError, match="negative"):
    refine.refine_latents(z - 1.0, x, w, b)
  with pytest.raises(JaxsaeError, match="NaN"):
    refine.refine_latents(z, x + np.nan, w, b)
  with pytest.raises(JaxsaeError, match="lr"):
    refine.refine_latents(z, x, w, b, lr=-1.0)
  with pytest.raises(JaxsaeError, match="steps"):
    refine.refine_latents(z, x, w, b, steps=-1)
