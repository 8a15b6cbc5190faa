"""Synthetic activations with known features: the ground truth that SAE recovery is scored on.

x = Σ_{i ∈ S} c_i f_i + ε, with n_features random unit directions f_i in R^d, each active on a
token independently with probability `active / n_features`, coefficients c_i ~ U(0.5, 1.5) and
isotropic Gaussian noise of total norm ≈ `noise`. A good SAE's decoder rows should find the f_i
(`recovered_fraction`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SyntheticFeatures:
  d: int = 64
  n_features: int = 256
  active: float = 4.0  # Mean number of active features per token.
  noise: float = 0.05  # Expected norm of the noise vector.
  seed: int = 0

  def directions(self) -> np.ndarray:
    """(n_features, d) unit-norm true feature directions."""
    rng = np.random.default_rng([self.seed, 0])
    f = rng.normal(size=(self.n_features, self.d))
    return (f / np.linalg.norm(f, axis=-1, keepdims=True)).astype(np.float32)

  def generate(self, n_tokens: int, stream: int = 1) -> np.ndarray:
    """(n_tokens, d) float32 activations; `stream` picks an independent set of tokens."""
    rng = np.random.default_rng([self.seed, stream])
    on = rng.random((n_tokens, self.n_features)) < self.active / self.n_features
    coef = rng.uniform(0.5, 1.5, size=on.shape) * on
    noise = rng.normal(size=(n_tokens, self.d)) * (self.noise / np.sqrt(self.d))
    return (coef @ self.directions() + noise).astype(np.float32)


def max_cosines(true_FxD: np.ndarray, decoder_NxD: np.ndarray) -> np.ndarray:
  """For each true direction, its largest cosine similarity with any decoder row."""
  t = true_FxD / np.linalg.norm(true_FxD, axis=-1, keepdims=True)
  w = decoder_NxD / np.maximum(np.linalg.norm(decoder_NxD, axis=-1, keepdims=True), 1e-12)
  return (t @ w.T).max(axis=-1)


def recovered_fraction(true_FxD: np.ndarray, decoder_NxD: np.ndarray, cosine: float = 0.9):
  """Share of true directions matched by some decoder row at cosine ≥ `cosine`."""
  return float(np.mean(max_cosines(true_FxD, decoder_NxD) >= cosine))
