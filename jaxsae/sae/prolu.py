"""ProLU SAE (Taggart 2024, "ProLU: A Nonlinearity for Sparse Autoencoders").

    m = (x̃ − b_dec) W_enc          (no bias inside)
    z = m · 1[m > 0] · 1[m + b_enc > 0]
    L = ‖x̃ − x̂‖² + λ Σ_i z_i        ("l1") or λ Σ_i √z_i ("sqrt_l1")

Two gradient choices for the thresholding (custom_vjp, `nonlinearities.prolu_*`): ProLU-ReLU
(architecture "prolu_relu") and ProLU-STE ("prolu_ste"). `Encoding.pre` is m. With a free
decoder the penalty is weighted by ‖w_i‖.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxsae.sae import nonlinearities
from jaxsae.sae.base import Encoding, Hyper, SparseAutoencoder


def sqrt_abs(z: jnp.ndarray) -> jnp.ndarray:
  """√|z| with a zero (not infinite) gradient at z = 0."""
  positive = jnp.abs(z) > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, jnp.abs(z), 1.0)), 0.0)


class ProLUSAE(SparseAutoencoder):
  """ProLU with the ProLU-ReLU gradient."""

  has_l1_penalty = True
  activation = staticmethod(nonlinearities.prolu_relu)

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    m = self.centered_matmul(x_BxD, self.W_enc)
    return Encoding(self.activation(m, self.b_enc), m)

  def extra_terms(self, x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N):
    z = enc.latents if self.config.prolu_penalty == "l1" else sqrt_abs(enc.latents)
    return {"sparsity": hyper.sparsity_coefficient * self.l1_penalty(z)}, {}


class ProLUSTESAE(ProLUSAE):
  """ProLU with the ProLU-STE gradient."""

  activation = staticmethod(nonlinearities.prolu_ste)
