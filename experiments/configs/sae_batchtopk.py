"""BatchTopK SAE (Bussmann et al. 2024): top k·B over the batch; a threshold at inference.

python -m experiments.train_sae --config=experiments/configs/sae_batchtopk.py --workdir=runs/sae_batchtopk

The recipe (λ, options) is `jaxsae.sae.train_config.RECIPES["batchtopk"]`; the data default is the
synthetic benchmark (`data.source`).
"""

from jaxsae.sae.train_config import base_config


def get_config():
  return base_config("batchtopk")
