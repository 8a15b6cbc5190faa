"""The activation-function ablation study (TopK, Multi-TopK, BatchTopK, ReLU, Gated, ProLU-ReLU,
ProLU-STE, JumpReLU; TopK without AuxK and tied init) on the shipped model's stored activations.

python -m experiments.ablation                                  # default grid, runs/ablation
python -m experiments.ablation --config=experiments/configs/ablation.py:quick

Every field of jaxsae/ablation/config.py's base_config can be overridden on the command line,
e.g. --config.harvest.hook=blocks.2.resid_post --config.train.steps=2000.
"""

from jaxsae.ablation.config import base_config


def get_config(size: str = "default"):
  c = base_config()
  if size == "quick":  # Minutes: fewer tokens and steps, the same grid shape at two widths.
    c.harvest.train_windows = 1024
    c.harvest.eval_windows = 64
    c.train.steps = 300
    c.grid.runs = tuple(r for r in c.grid.runs if r[1] in (256, 1024))
    c.evals.probe_windows = 96
    c.evals.n2g_latents = 128
    c.evals.browser_latents = 32
  elif size != "default":
    raise ValueError(f"unknown ablation config size {size!r}; use 'default' or 'quick'")
  return c
