"""TopK SAE with AuxK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

python -m experiments.train_sae --config=experiments/configs/sae_topk.py --workdir=runs/sae_topk

The recipe (λ, options) is `jaxsae.sae.train_config.RECIPES["topk"]`; the data default is the
synthetic benchmark (`data.source`).
"""

from jaxsae.sae.train_config import base_config


def get_config():
  return base_config("topk")
