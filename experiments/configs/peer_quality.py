"""jaxsae's default recipes against sparsify and SAELens on the main job's activations.

python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality

Every field of jaxsae/main_job.py's base_config (the data, n, k, batch and steps every trainer
shares) and of `quality` can be overridden, e.g. --config.quality.budgets=1,10

The 10× rows of the published page come from the same workdir with
  --config.quality.budgets=10 --config.quality.trainers=jaxsae,sparsify-adam-constant,saelens
  --config.quality.budgets=10 --config.quality.seeds=0 \
    --config.quality.trainers=saelens-batchtopk,jaxsae-batchtopk,saelens-jumprelu-target,jaxsae-jumprelu \
    --config.quality.lambdas.saelens_jumprelu_target=12,20 --config.quality.lambdas.jaxsae_jumprelu=12,20
  --config.quality.budgets=10 --config.quality.seeds=0 --config.quality.trainers=jaxsae-relu,saelens-relu \
    --config.quality.lambdas.jaxsae_relu=0.012,0.008,0.005 --config.quality.lambdas.saelens_relu=1.5,1.0
  --config.quality.budgets=10 --config.quality.seeds=0 --config.quality.trainers=jaxsae-gated
    --config.quality.lambdas.jaxsae_gated=0.012,0.008
  --config.quality.budgets=10 --config.quality.seeds=0 --config.quality.trainers=saelens-gated
    --config.quality.lambdas.saelens_gated=1.4,0.9 --config.quality.peer_threads=1
    --config.quality.shard=0/2 (and 1/2 beside it: one process per core)
(15,000 steps each).

Gemma 3 270M's page: experiments/configs/peer_quality_gemma3.py (its docstring has the command).
"""

from jaxsae.quality.study import base_config

# Ladders bracketing L0 = 16 at the main job's budget and the default learning rate
# (6e-4/√(n/2¹⁴) = 2.4e-3 here), each on its trainer's own scale. SAELens trains on raw
# activations (E‖x‖² = 218 here against jaxsae's d = 128) and sums the squared error over d, so
# its λ is about d/c ≈ 170× jaxsae's for the L1 families. JumpReLU ladders (both sides) are of
# target L0s: Gemma Scope 2's quadratic penalty, jaxsae's default JumpReLU penalty. SAELens's
# JumpReLU in its default step mode on raw activations (θ₀ = 0.01, bandwidth 0.05, both meant
# for normalized inputs) stayed at L0 40–58 for λ 2–20,000 at the earlier rate: its rows are
# kept on the page, and it is not rerun.
LAMBDAS = {
  "jaxsae_relu": "0.031,0.021,0.012,0.007",
  "saelens_relu": "3.5,2.3,1.5,1.0",
  "jaxsae_gated": "0.02,0.014,0.01",
  "saelens_gated": "4.2,2.7,1.8",
  "jaxsae_jumprelu": "12,16,24",
  "saelens_jumprelu_target": "12,16,22",
}


def get_config():
  c = base_config()
  c.quality.seeds = "0,1"  # Two seeds each: the spread between seeds is part of the answer.
  c.quality.budgets = "1"  # The main job's 1,500 steps; 10× as the docstring says (hours here).
  c.quality.trainers = ",".join([
    "jaxsae", "sparsify-signum", "sparsify-adam", "sparsify-adam-constant", "saelens",
    "jaxsae-batchtopk", "saelens-batchtopk",
    "jaxsae-relu", "saelens-relu", "jaxsae-gated", "saelens-gated",
    "jaxsae-jumprelu", "saelens-jumprelu-target",
  ])  # fmt: skip
  c.quality.lambdas.update(LAMBDAS)
  return c
