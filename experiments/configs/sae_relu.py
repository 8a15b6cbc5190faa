"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, April 2024 update).

python -m experiments.train_sae --config=experiments/configs/sae_relu.py --workdir=runs/sae_relu

The recipe (λ, options) is `jaxsae.sae.train_config.RECIPES["relu"]`; the data default is the
synthetic benchmark (`data.source`).
"""

from jaxsae.sae.train_config import base_config


def get_config():
  return base_config("relu")
