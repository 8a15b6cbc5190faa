"""BatchTopK SAE (Bussmann et al. 2024): top k·B over the batch; a threshold at inference.

python -m experiments.main --config=experiments/configs/sae_batchtopk.py --workdir=runs/sae_batchtopk

The main job with this architecture: harvest the shipped model at blocks.1.resid_post, train,
evaluate against same-L0 baselines. The recipe (λ, options) is
jaxsae.sae.train_config.RECIPES["batchtopk"].
"""

from jaxsae.main_job import base_config


def get_config():
  return base_config("batchtopk")
