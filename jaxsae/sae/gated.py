"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs").

    π_gate = (x̃ − b_dec) W_enc + b_gate
    π_mag  = (x̃ − b_dec) (W_enc ⊙ exp(r_mag)) + b_mag          (weight sharing, eq. 5)
    z      = 1[π_gate > 0] ⊙ ReLU(π_mag)
    L = ‖x̃ − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x̃ − (ReLU(π_gate) sg(W_dec) + sg(b_dec))‖²   (eq. 7)

As a transcoder the errors are against the target ỹ, and a skip term x̃ W_skip joins sg(b_dec).

The indicator has no gradient; the auxiliary term (with stop-gradients on the decoder) is what
trains the gate path. With a free decoder (`decoder_norm="penalty"`) the L1 term is weighted by
‖w_i‖. Default: unit-norm decoder, as in the paper's experiments, and W_enc's init scale fitted
to the least-squares first reconstruction (as TopK's; the paper does not say its init).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsae.sae.base import Encoding, Hyper, SparseAutoencoder


class GatedSAE(SparseAutoencoder):
  has_l1_penalty = True
  # With b_gate = b_mag = 0 at init, W_enc ← s·W_enc leaves the gate and scales z and the aux
  # path's ReLU(π_gate) by s, so encoder_init_scale = -1 fits it (base.fitted_encoder_scale).
  # Why: its unit-norm decoder and tied encoder at s = 1 open the gate of about half the
  # latents, each adding its whole projection: the first reconstruction overshoots several
  # times over and the L1 and aux terms start at their largest. Main job, L0 16, seed 0:
  # held-out FVU 0.106 at s = 1, 0.085 fitted (SAELens, whose encoder starts at norm 0.1: 0.086).
  fits_encoder_scale = True
  # Adam's β1 stays 0.9 (dictionary_learning trains Gated with 0): with the fitted scale, FVU at
  # L0 16 0.080 (seeds 0 and 1: 0.080, 0.081) against 0.085 with β1 = 0 (seed 0); at s = 1 it
  # mattered less (0.103 against 0.106).

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
