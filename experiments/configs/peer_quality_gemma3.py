"""jaxsae's default recipes against sparsify and SAELens on Gemma 3 270M's residual stream.

python -m experiments.peer_quality --config=experiments/configs/peer_quality_gemma3.py \
  --workdir=runs/peer_quality_gemma3 --publish=docs/quality/gemma3

The activations are the Gemma 3 study's (experiments/configs/gemma3.py: `blocks.9.resid_post`,
3,072 BOS-first train-split windows of the standard library, BOS positions left out), so a
workdir whose `stores` links to that study's workdir (`ln -s ../gemma3 runs/<workdir>/stores`)
reuses its harvest. n = 4,096 (6.4 × d) rather than the study's 16,384 keeps each SAELens run
near ten minutes on 2 CPU cores; the budget is the study's (800 steps of 1,024).
"""

from experiments.configs import gemma3
from jaxsae.quality.study import base_config

# Target-L0 ladders (Gemma Scope 2's quadratic penalty, both sides) bracketing L0 = 32.
LAMBDAS = {
  "jaxsae_jumprelu": "24,44",
  "saelens_jumprelu_target": "24,44",
}


def get_config():
  c = base_config()
  c.harvest.update(gemma3.get_config().harvest)  # The Gemma 3 study's stores, field for field.
  c.sae.n_latents = 4096
  c.sae.k = 32  # The study's L0.
  c.train.steps = 800  # The study's budget: 819,200 activations, 2.1 passes over the store.
  c.train.batch_size = 1024
  c.train.dead_window_tokens = 200_000  # As the study's: a quarter of training.
  c.quality.seeds = "0"
  c.quality.budgets = "1"
  c.quality.trainers = ",".join([
    "jaxsae", "sparsify-adam-constant", "saelens",
    "jaxsae-batchtopk", "saelens-batchtopk",
    "jaxsae-jumprelu", "saelens-jumprelu-target",
  ])  # fmt: skip
  c.quality.lambdas.update(LAMBDAS)
  # Gemma's residual norms are in the thousands: SAELens gets its own input scaling (as Gemma
  # Scope 2 trains); sparsify has none and trains on the raw rows, as its users do.
  c.quality.saelens_normalize = "expected_average_only_in"
  # As the Gemma 3 study's: ΔCE on 24 held-out windows, 8 per forward (262k-wide logits).
  c.quality.delta_ce_windows = 24
  c.quality.eval_batch_size = 8
  c.quality.command = (
    "python -m experiments.peer_quality --config=experiments/configs/peer_quality_gemma3.py "
    "--workdir=runs/peer_quality_gemma3 --publish=docs/quality/gemma3"
  )
  return c
