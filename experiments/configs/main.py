"""The main job: harvest the shipped model's activations, train an SAE, evaluate it in the model.

python -m experiments.main
python -m experiments.main --config=experiments/configs/main.py:gated --workdir=runs/main_gated

The argument picks the architecture (its recipe from jaxsae.sae.train_config.RECIPES); every
field of jaxsae/main_job.py's base_config can be overridden, e.g. --config.harvest.hook=...
"""

from jaxsae.main_job import base_config


def get_config(architecture: str = "topk"):
  return base_config(architecture)
