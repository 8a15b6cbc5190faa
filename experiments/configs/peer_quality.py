"""jaxsae's default TopK recipe against sparsify and SAELens on the main job's activations.

python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality

Every field of jaxsae/main_job.py's base_config (the data, n, k, batch and steps every trainer
shares) and of `quality` can be overridden, e.g. --config.quality.budgets=1,10
"""

from jaxsae.quality.study import base_config


def get_config():
  c = base_config()
  c.quality.seeds = "0,1"  # Two seeds each: the spread between seeds is part of the answer.
  c.quality.budgets = "1"  # The main job's 1,500 steps; "1,10" adds 15,000 (about 2 h here).
  return c
