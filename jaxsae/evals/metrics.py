"""Reconstruction and sparsity metrics of the TopK paper, one definition each, on arrays.

    explained variance = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²     (x̄ the mean over the whole set, not 0,
                                                         not per batch; a constant offset counts)
    normalized MSE (OpenAI) = MSE / MSE of predicting the mean = FVU on the same set
    shrinkage γ = E‖x̂‖² / E⟨x, x̂⟩                      (1: none; < 1: latents shrunk)
    ablation sparsity of an effect Δ: (‖Δ‖₁ / ‖Δ‖₂)², the effective number of entries it
                                      touches, and that number over len(Δ)
    progressive recovery: reconstruct with TopK(k′) (or a threshold) on the trained SAE's
                          pre-activations, for k′ other than the training k

Streaming versions accumulate the sums these need (`ReconstructionSums`) so a metric over a
whole evaluation set is never an average of per-batch values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class ReconstructionSums:
  """Running sums over an evaluation set: enough for FVU, normalized MSE and shrinkage."""

  n: int = 0
  sum_x: np.ndarray | None = None
  sum_sq_x: float = 0.0
  sum_sq_err: float = 0.0
  sum_sq_x_hat: float = 0.0
  sum_dot: float = 0.0

  def add(self, x_NxD, x_hat_NxD) -> ReconstructionSums:
    x, x_hat = np.asarray(x_NxD, np.float64), np.asarray(x_hat_NxD, np.float64)
    return self.add_sums(
      len(x),
      sum_x=x.sum(0),
      sum_sq_x=np.sum(x**2),
      sum_sq_err=np.sum((x - x_hat) ** 2),
      sum_sq_x_hat=np.sum(x_hat**2),
      sum_dot=np.sum(x * x_hat),
    )

  def add_sums(self, n, *, sum_x, sum_sq_x, sum_sq_err, sum_sq_x_hat, sum_dot):
    """Add a batch given by its sums (e.g. reduced on the device)."""
    self.n += int(n)
    sum_x = np.asarray(sum_x, np.float64)
    self.sum_x = sum_x if self.sum_x is None else self.sum_x + sum_x
    self.sum_sq_x += float(sum_sq_x)
    self.sum_sq_err += float(sum_sq_err)
    self.sum_sq_x_hat += float(sum_sq_x_hat)
    self.sum_dot += float(sum_dot)
    return self

  @property
  def fvu(self) -> float:
    mean = self.sum_x / self.n
    return self.sum_sq_err / (self.sum_sq_x - self.n * float(mean @ mean))

  @property
  def explained_variance(self) -> float:
    return 1.0 - self.fvu

  @property
  def normalized_mse(self) -> float:
    """OpenAI's normalized MSE; over one whole set it is the FVU."""
    return self.fvu

  @property
  def mse(self) -> float:
    """Mean over tokens of ‖x − x̂‖²."""
    return self.sum_sq_err / self.n

  @property
  def shrinkage(self) -> float:
    return self.sum_sq_x_hat / self.sum_dot


def reconstruction_sums(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> ReconstructionSums:
  sums = ReconstructionSums()
  for x, x_hat in pairs:
    sums.add(x, x_hat)
  return sums


def density_histogram(fires_N, tokens: int, edges: Sequence[float] | None = None):
  """(counts, edges): latents per log10(fires/tokens) bin; counts[0] are latents never fired."""
  edges = np.linspace(-10, 0, 41) if edges is None else np.asarray(edges)
  fires = np.asarray(fires_N)
  density = np.log10(np.maximum(fires / tokens, 1e-30))
  counts = np.histogram(density[fires > 0], bins=edges)[0]
  return np.concatenate([[int(np.sum(fires == 0))], counts]), edges


def ablation_sparsity(delta) -> tuple[float, float]:
  """((‖Δ‖₁/‖Δ‖₂)², that over len(Δ)) for one ablation's change in downstream logits."""
  d = np.abs(np.asarray(delta, np.float64)).ravel()
  l2 = np.sqrt(np.sum(d**2))
  if l2 == 0:
    return 0.0, 0.0
  effective = float((d.sum() / l2) ** 2)
  return effective, effective / d.size


def top_k_codes(pre_NxM: jax.Array, k: int) -> jax.Array:
  """ReLU(TopK_k(pre)) on the full (unsharded) pre-activations."""
  values, index = jax.lax.top_k(pre_NxM.astype(jnp.float32), k)
  rows = jnp.arange(pre_NxM.shape[0])[:, None]
  return jnp.zeros_like(pre_NxM).at[rows, index].set(jax.nn.relu(values))


def progressive_recovery(
  pre_NxM, x_NxD, decode, ks: Sequence[int] = (), thresholds: Sequence[float] = ()
) -> list[dict]:
  """Rows {"activation", "value", "l0", "mse", "fvu"} for TopK(k′) and threshold activations
  applied to an SAE's pre-activations, decoded by `decode(z) -> x̂`."""
  pre, x = jnp.asarray(pre_NxM), np.asarray(x_NxD)
  out = []
  codes = [("topk", k, top_k_codes(pre, k)) for k in ks]
  codes += [("threshold", t, jnp.where(pre > t, pre, 0.0)) for t in thresholds]
  for kind, value, z in codes:
    sums = ReconstructionSums().add(x, np.asarray(decode(z)))
    out.append(
      {
        "activation": kind,
        "value": value,
        "l0": float(jnp.mean(jnp.sum(z != 0, -1))),
        "mse": sums.mse,
        "fvu": sums.fvu,
      }
    )
  return out
