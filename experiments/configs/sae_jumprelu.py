"""JumpReLU SAE (Rajamanoharan et al. 2024) with the straight-through L0 penalty.

python -m experiments.train_sae --config=experiments/configs/sae_jumprelu.py --workdir=runs/sae_jumprelu

The recipe (λ, options) is `jaxsae.sae.train_config.RECIPES["jumprelu"]`; the data default is the
synthetic benchmark (`data.source`).
"""

from jaxsae.sae.train_config import base_config


def get_config():
  return base_config("jumprelu")
