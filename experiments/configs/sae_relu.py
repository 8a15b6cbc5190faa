"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, April 2024 update).

python -m experiments.main --config=experiments/configs/sae_relu.py --workdir=runs/sae_relu

The main job with this architecture: harvest the shipped model at blocks.1.resid_post, train,
evaluate against same-L0 baselines. The recipe (λ, options) is
jaxsae.sae.train_config.RECIPES["relu"].
"""

from jaxsae.main_job import base_config


def get_config():
  return base_config("relu")
