"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs").

    π_gate = (x̃ − b_dec) W_enc + b_gate
    π_mag  = (x̃ − b_dec) (W_enc ⊙ exp(r_mag)) + b_mag          (weight sharing, eq. 5)
    z      = 1[π_gate > 0] ⊙ ReLU(π_mag)
    L = ‖x̃ − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x̃ − (ReLU(π_gate) sg(W_dec) + sg(b_dec))‖²   (eq. 7)

As a transcoder the errors are against the target ỹ, and a skip term x̃ W_skip joins sg(b_dec).

The indicator has no gradient; the auxiliary term (with stop-gradients on the decoder) is what
trains the gate path. With a free decoder (`decoder_norm="penalty"`) the L1 term is weighted by
‖w_i‖. Default: unit-norm decoder, as in the paper's experiments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae.base import Encoding, Hyper, SparseAutoencoder


class GatedSAE(SparseAutoencoder):
  has_l1_penalty = True
  default_b1 = 0.0

  def setup_encoder(self):
    self.b_gate = self.latent_param("b_gate", 0.0)
    self.r_mag = self.latent_param("r_mag", 0.0)
    self.b_mag = self.latent_param("b_mag", 0.0)

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    pi_gate = self.centered_matmul(x_BxD, self.W_enc) + self.b_gate
    pi_mag = self.centered_matmul(x_BxD, self.W_enc * jnp.exp(self.r_mag)) + self.b_mag
    z = (pi_gate > 0).astype(pi_mag.dtype) * jax.nn.relu(pi_mag)
    return Encoding(z, pi_mag, gate=pi_gate)

  def extra_terms(self, x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N):
    gate_acts = jax.nn.relu(enc.gate)
    frozen = jax.lax.stop_gradient((self.W_dec, self.output_bias(x_BxD)))
    y_via_gate = self.axes.sum_latents(self.matmul(gate_acts, frozen[0])) + frozen[1]
    return {
      "sparsity": hyper.sparsity_coefficient * self.l1_penalty(gate_acts),
      "gate_aux": self.reconstruction_error(y_BxO, y_via_gate),
    }, {}
