"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; Gemma Scope).

    z = pre · H(pre − θ)            θ > 0 per latent, float32
    L = ‖x̃ − x̂‖² + λ Σ_i H(pre_i − θ_i)     (an L0 penalty, eq. 10)

or, with `jumprelu_penalty="target"`, Gemma Scope 2's quadratic penalty around a target L0 of k,
    L = ‖x̃ − x̂‖²/d + (λ/d) (2/k) (Σ_i H(pre_i − θ_i) − k)²    (per token, then the mean),
which pulls every token's L0 towards k from either side instead of pushing it down. Our error is
a mean over the d outputs where SAELens's (which trains Gemma Scope 2's recipe) is a sum, so the
penalty is divided by d too: λ means what SAELens's λ means, and this L is SAELens's over d.
Its gradient-norm clip is SAELens's over d as well (`default_clip_norm`). For a CLT or a set of
per-layer transcoders (`cross_layer`) d is one layer's width: the error there is Σ_l of each
layer's normalized MSE, SAELens's per-layer error over d, so the penalty on the total L0 against
a total k is the sum of L per-layer penalties in the same units. (Dividing by all layers' L·d
made it L times too weak: at Gemma 3 270M's 18 layers the penalty was 0.17 against an error of
17 at L0 194 for k = 32, and a per-layer set's L0 rose from 56 to 900 in 50 steps.) With
`tanh_c` = c > 0 the sparsity term is instead λ Σ_i tanh(c·z_i·‖w_i‖) (Circuit Tracing's, for
CLTs).

Both functions use the straight-through pseudo-derivatives of `nonlinearities` (rectangle
kernel, bandwidth ε); the step acts on the pre-activations. The paper's ε = θ₀ = 0.001 are for
E‖x̃‖² = 1; our inputs have E‖x̃‖² = d, so the defaults are 0.001·√d (`SAEConfig.bandwidth`).
After each step θ is clipped at 0, so z stays non-negative (a projection the paper does not
need to state: with θ ≤ 0, negative pre-activations would pass).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxsae.sae import nonlinearities
from jaxsae.sae.base import Encoding, Hyper, SparseAutoencoder


class JumpReLUSAE(SparseAutoencoder):
  default_b1 = 0.0
  # A free decoder (rows at norm 0.1 at init, `SAEConfig.decoder_init_norm`), as SAELens trains
  # it: at L0 16 on the main job, held-out FVU 0.0905 against 0.0969 with unit-norm rows.
  auto_unit_norm_decoder = False

  @property
  def default_clip_norm(self) -> float:
    """SAELens's clip of 1 on its error summed over d, for the target penalty (on the main job's
    activations it is what lands the targets: docs/quality); the paper's λ·L0 keeps 1. A CLT's
    d is one layer's width, as in the penalty."""
    if self.config.jumprelu_penalty == "target" and self.config.tanh_c <= 0:
      return 1.0 / self.config.d_layer_out
    return 1.0

  def setup_encoder(self):
    super().setup_encoder()
    self.threshold = self.latent_param("threshold", self.config.init_threshold)

  def encode(self, x_BxD, hyper: Hyper | None = None, train: bool = False) -> Encoding:
    pre = self.pre_activations(x_BxD)
    return Encoding(nonlinearities.jumprelu(pre, self.threshold, self.config.bandwidth), pre)

  def extra_terms(self, x_BxD, y_BxO, y_hat_BxO, enc, hyper, dead_N):
    if self.config.tanh_c > 0:  # Circuit Tracing's: through z, θ's gradient is the jump's.
      return {"sparsity": hyper.sparsity_coefficient * self.tanh_penalty(enc.latents)}, {}
    steps = nonlinearities.heaviside_step(enc.pre, self.threshold, self.config.bandwidth)
    l0_B = self.axes.sum_latents(jnp.sum(steps, -1))  # Every latent shard's count: the L0.
    if self.config.jumprelu_penalty == "target":
      k = hyper.k.astype(l0_B.dtype)  # Traced: sweep members may target different L0s.
      l0_B = (2.0 / k) * (l0_B - k) ** 2 / self.config.d_layer_out
    return {"sparsity": hyper.sparsity_coefficient * self.mean_over_tokens(l0_B)}, {}

  def constrain(self, params):
    params = super().constrain(params)
    return {**params, "threshold": jnp.maximum(params["threshold"], 0.0)}
