"""Gated SAE (Rajamanoharan et al. 2024), with r_mag weight sharing and the aux loss.

python -m experiments.main --config=experiments/configs/sae_gated.py --workdir=runs/sae_gated

The main job with this architecture: harvest the shipped model at blocks.1.resid_post, train,
evaluate against same-L0 baselines. The recipe (λ, options) is
jaxsae.sae.train_config.RECIPES["gated"].
"""

from jaxsae.main_job import base_config


def get_config():
  return base_config("gated")
