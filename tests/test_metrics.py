"""The TopK paper's metrics against values computed by hand on tiny inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.evals import metrics

X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # mean (3, 4); Σ‖x − x̄‖² = 8 + 0 + 8 = 16


def test_explained_variance_is_against_the_mean_of_the_whole_set():
  x_hat = X + np.array([[1.0, 0.0], [0.0, 0.0], [0.0, -1.0]])  # Σ‖x − x̂‖² = 2
  sums = metrics.ReconstructionSums().add(X, x_hat)
  assert sums.fvu == pytest.approx(2 / 16)
  assert sums.explained_variance == pytest.approx(1 - 2 / 16)
  assert sums.normalized_mse == sums.fvu
  assert sums.mse == pytest.approx(2 / 3)
  # The trap: against zero the same error would look like 1 − 2/91 explained.
  assert sums.explained_variance != pytest.approx(1 - 2 / float(np.sum(X**2)))
  # Summed over batches, not averaged per batch: split unevenly, the result is the same.
  split = metrics.reconstruction_sums([(X[:1], x_hat[:1]), (X[1:], x_hat[1:])])
  assert split.fvu == pytest.approx(sums.fvu)


def test_a_constant_offset_is_an_error():
  sums = metrics.ReconstructionSums().add(X, X + 1.0)  # Var(x − x̂) = 0, error 6.
  assert sums.fvu == pytest.approx(6 / 16)


def test_shrinkage():
  assert metrics.ReconstructionSums().add(X, 0.5 * X).shrinkage == pytest.approx(0.5)
  assert metrics.ReconstructionSums().add(X, X).shrinkage == pytest.approx(1.0)


def test_density_histogram_counts_never_fired_latents_first():
  counts, edges = metrics.density_histogram([0, 1, 10, 100, 0], tokens=1000, edges=[-4, -2, 0])
  # densities 1e-3, 1e-2, 1e-1 → log10 -3, -2, -1: bins [-4,-2) holds 1, [-2,0] holds 2.
  assert counts.tolist() == [2, 1, 2]


def test_ablation_sparsity():
  assert metrics.ablation_sparsity([0, 0, 5.0, 0]) == (1.0, 0.25)  # One entry: exactly 1.
  effective, ratio = metrics.ablation_sparsity([1.0, -1.0, 1.0, -1.0])
  assert effective == pytest.approx(4.0) and ratio == pytest.approx(1.0)


def test_progressive_recovery_topk_and_thresholds():
  pre = jnp.array([[3.0, 1.0, -2.0], [0.5, 2.0, 4.0]])
  w = np.eye(3)
  x = np.array([[3.0, 1.0, 0.0], [0.5, 2.0, 4.0]])
  rows = metrics.progressive_recovery(
    pre, x, lambda z: np.asarray(z) @ w, ks=(1, 3), thresholds=(0.75,)
  )
  by = {(r["activation"], r["value"]): r for r in rows}
  assert by[("topk", 1)]["l0"] == 1.0
  assert by[("topk", 1)]["mse"] == pytest.approx((1.0 + 0.25 + 4.0) / 2)
  assert by[("topk", 3)]["mse"] == pytest.approx(0.0)  # ReLU drops the −2, which x lacks.
  assert by[("threshold", 0.75)]["l0"] == pytest.approx(2.0)  # 0.5 and −2 fall below.
  assert by[("threshold", 0.75)]["mse"] == pytest.approx(0.25 / 2)
