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

# Target-L0 ladders (Gemma Scope 2's quadratic penalty, both sides) bracketing L0 = 32, and λ
# ladders of the L1 families bracketing their matched L0 (below).
LAMBDAS = {
  "jaxsae_jumprelu": "24,44",
  "saelens_jumprelu_target": "24,44",
  "jaxsae_relu": "0.002,0.004,0.007",
  "saelens_relu": "3.2,10",  # 3.2 → L0 389: SAELens needs a larger λ than d × jaxsae's here.
  "jaxsae_gated": "0.002,0.0007",
  "saelens_gated": "1.3,4,12,40",  # 1.3 → L0 797, 12 → 201: λ far above d × jaxsae's.
}
# ReLU and Gated are compared at L0 = 128, not k = 32. On these rows, scaled to E‖x‖² = d, the
# mean is 94% of ‖x‖² (the centered rows' norm is ~5.4 of √640 ≈ 25), and one direction holds
# 43% of the centered variance (bimodal, ±10). An L1 penalty weighs a feature by its magnitude:
# the few large directions pay for themselves and the many small ones do not, so raising λ
# towards L0 32 kills latents wholesale instead of sparsifying them (jaxsae's ReLU: λ 0.002 →
# L0 182, FVU 0.19, 4% dead; 0.007 → L0 92, FVU 0.42, 42% dead; Gated 0.014 → L0 0.9).
MATCH_L0 = {"relu": 128.0, "gated": 128.0}


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
    "jaxsae-relu", "saelens-relu", "jaxsae-gated", "saelens-gated",
    "jaxsae-jumprelu", "saelens-jumprelu-target",
  ])  # fmt: skip
  c.quality.lambdas.update(LAMBDAS)
  c.quality.match_l0.update(MATCH_L0)
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
