"""Every SAE architecture on synthetic activations with known features, in one pass.

python -m experiments.train_sae --config=experiments/configs/sae_synthetic.py --workdir=runs/sae_synthetic

256 unit feature directions in R^64, about 4 active per token, with noise; 1024 latents,
2000 steps of 1024 tokens. Each architecture uses its recipe (`RECIPES`: its own λ, chosen to
land near L0 ≈ 4–8; TopK and BatchTopK: k = 4). The table reports held-out L0, FVU, dead
fraction and the share of true features some decoder row matches at cosine ≥ 0.9.
"""

from jaxsae.sae.train_config import RECIPES, base_config


def get_config():
  c = base_config()
  c.sweep.architecture = tuple(RECIPES)  # Each with its own recipe (c.overrides).
  c.train.dead_window_tokens = 500_000
  return c
