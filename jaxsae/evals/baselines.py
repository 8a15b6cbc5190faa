"""Same-L0 baselines an SAE must beat: PCA truncation and a random TopK dictionary.

PCA(k): x̂ = μ + (x − μ) V_k V_kᵀ with V_k the top k principal directions of a training sample —
the best any k-dimensional *linear* code can do (dense codes of width k, L0 = k).
Random TopK(k): n random unit directions as decoder rows, W_enc = W_decᵀ, b_dec = μ, the k
largest projections kept — what the TopK architecture gives before any training.
Both act on raw activations and plug into `evaluate.metrics_of` (as encode_decode functions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.sae.base import unit_rows
from jaxsae.sae.config import SAEConfig


def pca_variables(sample_NxD: np.ndarray, k: int) -> dict[str, jax.Array]:
  x = np.asarray(sample_NxD, np.float64)
  mean = x.mean(0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return {"mean": jnp.asarray(mean, jnp.float32), "basis": jnp.asarray(vt[:k].T, jnp.float32)}


def pca_encode_decode(variables, x_NxD):
  codes = (x_NxD - variables["mean"]) @ variables["basis"]
  return codes, variables["mean"] + codes @ variables["basis"].T


def random_topk(d: int, n: int, k: int, mean_D: np.ndarray, seed: int = 0):
  """(config, variables) of an untrained TopK SAE on raw activations."""
  config = SAEConfig("topk", d_in=d, n_latents=n, k=k, k_aux=0)
  w_dec = unit_rows(jax.random.key(seed), (n, d))
  params = {
    "W_dec": w_dec,
    "W_enc": w_dec.T,
    "b_enc": jnp.zeros(n, jnp.float32),
    "b_dec": jnp.asarray(mean_D, jnp.float32),
  }
  return config, {"params": params}
