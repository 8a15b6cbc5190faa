"""Gated SAE (Rajamanoharan et al. 2024), with r_mag weight sharing and the aux loss.

python -m experiments.train_sae --config=experiments/configs/sae_gated.py --workdir=runs/sae_gated

The recipe (λ, options) is `jaxsae.sae.train_config.RECIPES["gated"]`; the data default is the
synthetic benchmark (`data.source`).
"""

from jaxsae.sae.train_config import base_config


def get_config():
  return base_config("gated")
