"""ProLU SAE (Taggart 2024) with the ProLU-STE gradient.

python -m experiments.main --config=experiments/configs/sae_prolu_ste.py --workdir=runs/sae_prolu_ste

The main job with this architecture: harvest the shipped model at blocks.1.resid_post, train,
evaluate against same-L0 baselines. The recipe (λ, options) is
jaxsae.sae.train_config.RECIPES["prolu_ste"].
"""

from jaxsae.main_job import base_config


def get_config():
  return base_config("prolu_ste")
