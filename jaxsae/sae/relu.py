"""ReLU SAE with an L1 penalty (Bricken et al. 2023; Anthropic, April 2024 update).

    z = ReLU(pre) ;   L = ‖x̃ − x̂‖² + λ Σ_i z_i ‖w_i‖

By default the decoder is free and the penalty is weighted by the decoder row norms ‖w_i‖
(April 2024 update), which stops the model from shrinking z by growing W_dec. With
`decoder_norm="unit"` the rows are kept at norm 1 and the penalty is the plain λ‖z‖₁. With
`tanh_c` = c > 0 it is λ Σ_i tanh(c·z_i·‖w_i‖) (Circuit Tracing's, for CLTs).
"""

from __future__ import annotations

import jax

from jaxsae.sae.base import Encoding, Hyper, SparseAutoencoder


class ReLUSAE(SparseAutoencoder):
  auto_unit_norm_decoder = False
  has_l1_penalty = True

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    pre = self.pre_activations(x_BxD)
    return Encoding(jax.nn.relu(pre), pre)

  def extra_terms(self, x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N):
    z = enc.latents
    penalty = self.tanh_penalty(z) if self.config.tanh_c > 0 else self.l1_penalty(z)
    return {"sparsity": hyper.sparsity_coefficient * penalty}, {}
