"""Bridges between a dense and a weight-sparse transformer (Gao et al. 2025, "Weight-sparse
transformers have interpretable circuits", §bridges).

At every residual site i (after the embedding, after each attention block and after each MLP
block: `bridge_sites`) an encoder maps the dense model's residual h_d into the sparse model's
and a decoder maps back:

    Enc_i(h_d) = AbsTopK_k(h_d W_enc + b_enc)      W_enc: d_dense x d_sparse
    Dec_i(h_s) = h_s W_dec + b_dec                  W_dec: d_sparse x d_dense

trained with the paper's loss, every coefficient 1:

    L = CE(sparse) + KL(p_d ‖ p_s)
        + Σ_i NMSE(Enc_i(h_d,i), sg(h_s,i)) + NMSE(Dec_i(h_s,i), sg(h_d,i))
        + Σ_i KL(p_d ‖ p_{d→s,i}) + KL(p_d ‖ p_{s→d,i})

p_d, p_s are the two models' next-token distributions; p_{d→s,i} runs the sparse model with its
residual at site i replaced by Enc_i(h_d,i) (the rest of its forward pass from there on), and
p_{s→d,i} runs the dense model with its residual at site i replaced by Dec_i(h_s,i).
KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), averaged over every predicted token. NMSE sums over
every token of the batch (all positions, separators included) before dividing:

    NMSE(x̂, x) = Σ_tokens ‖x̂ − x‖² / Σ_tokens ‖x‖².

Stop-gradients (sg): the encoder's target h_s is under sg (the encoder chases the sparse model,
never the reverse); the dense model is frozen, so everything of it (h_d, p_d) is too. The
decoder's input h_s and the sparse model's pass in the hybrids carry gradient, so
`bridge_losses` can also train the sparse model's parameters (`sparse_params`).

The paper trains the sparse model jointly with its bridges (and the dense model fixed). This
implementation trains the bridges between two *pretrained* models: both language models are
frozen and only the bridges learn (`train_bridges`), so CE(sparse) and KL(p_d ‖ p_s) are
constants; they are still reported. Training jointly would need the weight-sparse optimizer of
`jaxsae.sparse.optim`, and is left out. Also not from the paper: by default each bridge starts
as the least-squares linear map between the two residuals (`BridgeConfig.init`), so that a few
hundred CPU steps suffice.

Steering through a bridge is `jaxsae.sparse.bridge_steering`.

The package, one module per job:
  config    the bridge sites and `BridgeConfig` (how to build and train bridges)
  weights   `Bridges` (per-site encoder and decoder weights), encode, decode, the least-squares
            start, and the check that two models and their bridges fit together
  losses    every term of the loss above, jitted, and its average over held-out windows
  train     `make_bridges` and `train_bridges` (both language models frozen)
  saving    `save_bridges` / `load_bridges` (bridges.safetensors + bridges.json)
Everything public is importable from `jaxsae.sparse.bridges` itself.
"""

from jaxsae.sparse.bridges.config import (
  ALL_SITES,
  DEFAULT_TOPK_FRACTION,
  INITS,
  BridgeConfig,
  bridge_sites,
  check_sites,
)
from jaxsae.sparse.bridges.losses import (
  TERMS,
  bridge_losses,
  evaluate_bridges,
  kl_from,
  losses,
  nmse,
)
from jaxsae.sparse.bridges.saving import (
  CONFIG_FILE,
  FORMAT,
  WEIGHTS_FILE,
  load_bridges,
  save_bridges,
)
from jaxsae.sparse.bridges.train import TrainResult, make_bridges, make_train_step, train_bridges
from jaxsae.sparse.bridges.weights import (
  Bridges,
  check_pair,
  decode,
  encode,
  fit_linear,
  init_bridges,
)

__all__ = [
  "ALL_SITES",
  "CONFIG_FILE",
  "DEFAULT_TOPK_FRACTION",
  "FORMAT",
  "INITS",
  "TERMS",
  "WEIGHTS_FILE",
  "BridgeConfig",
  "Bridges",
  "TrainResult",
  "bridge_losses",
  "bridge_sites",
  "check_pair",
  "check_sites",
  "decode",
  "encode",
  "evaluate_bridges",
  "fit_linear",
  "init_bridges",
  "kl_from",
  "load_bridges",
  "losses",
  "make_bridges",
  "make_train_step",
  "nmse",
  "save_bridges",
  "train_bridges",
]
