"""jaxsae's default recipes against sparsify and SAELens on the main job's activations.

python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality

Every field of jaxsae/main_job.py's base_config (the data, n, k, batch and steps every trainer
shares) and of `quality` can be overridden, e.g. --config.quality.budgets=1,10
"""

from jaxsae.quality.study import base_config

# λ ladders bracketing L0 = 16 at the main job's budget (seed 0), each on its trainer's own
# scale. SAELens trains on raw activations (E‖x‖² = 218 here against jaxsae's d = 128) and sums
# the squared error over d, so its λ is about d/c ≈ 170× jaxsae's for the L1 families.
# SAELens's JumpReLU starts at θ = 0.01 on raw activations and its L0 moves little with λ in
# 1,500 steps (L0 40-53 for λ 2-200), hence the wide ladder.
LAMBDAS = {
  "jaxsae_relu": "0.031,0.021,0.014",
  "saelens_relu": "8,5.2,3.5,2.3",
  "jaxsae_gated": "0.039,0.025,0.016",
  "saelens_gated": "6.5,4.2,2.7",
  "jaxsae_jumprelu": "1.0,0.1,0.01",
  "saelens_jumprelu": "20000,2000,200,20,2",
}


def get_config():
  c = base_config()
  c.quality.seeds = "0,1"  # Two seeds each: the spread between seeds is part of the answer.
  c.quality.budgets = "1"  # The main job's 1,500 steps; "1,10" adds 15,000 (hours here).
  c.quality.trainers = ",".join([
    "jaxsae", "sparsify-signum", "sparsify-adam", "sparsify-adam-constant", "saelens",
    "jaxsae-batchtopk", "saelens-batchtopk",
    "jaxsae-relu", "saelens-relu", "jaxsae-gated", "saelens-gated",
    "jaxsae-jumprelu", "saelens-jumprelu",
  ])  # fmt: skip
  c.quality.lambdas.update(LAMBDAS)
  return c
