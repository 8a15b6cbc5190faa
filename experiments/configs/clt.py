"""A JumpReLU cross-layer transcoder of the shipped model's 4 MLPs, streamed.

python -m experiments.train_clt --workdir=runs/clt

Every field of jaxsae/clt_job.py's base_config (the main job's, plus `clt`) can be overridden.
"""

from jaxsae.clt_job import base_config


def get_config(architecture: str = "jumprelu"):
  return base_config(architecture)
