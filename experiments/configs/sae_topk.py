"""TopK SAE with AuxK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

python -m experiments.main --config=experiments/configs/sae_topk.py --workdir=runs/sae_topk

The main job with this architecture: harvest the shipped model at blocks.1.resid_post, train,
evaluate against same-L0 baselines. The recipe (λ, options) is
jaxsae.sae.train_config.RECIPES["topk"].
"""

from jaxsae.main_job import base_config


def get_config():
  return base_config("topk")
