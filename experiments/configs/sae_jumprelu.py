"""JumpReLU SAE (Rajamanoharan et al. 2024) with the straight-through L0 penalty.

python -m experiments.main --config=experiments/configs/sae_jumprelu.py --workdir=runs/sae_jumprelu

The main job with this architecture: harvest the shipped model at blocks.1.resid_post, train,
evaluate against same-L0 baselines. The recipe (λ, options) is
jaxsae.sae.train_config.RECIPES["jumprelu"].
"""

from jaxsae.main_job import base_config


def get_config():
  return base_config("jumprelu")
