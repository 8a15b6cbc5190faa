"""ProLU SAE (Taggart 2024) with the ProLU-STE gradient.

python -m experiments.train_sae --config=experiments/configs/sae_prolu_ste.py --workdir=runs/sae_prolu_ste

The recipe (λ, options) is `jaxsae.sae.train_config.RECIPES["prolu_ste"]`; the data default is the
synthetic benchmark (`data.source`).
"""

from jaxsae.sae.train_config import base_config


def get_config():
  return base_config("prolu_ste")
