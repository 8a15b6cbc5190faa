"""The study's config schema: what to harvest, the grid to train, and the evaluations to run.

Sections: `harvest` (as in the main job: model, hook, corpus, windows), `grid` (runs of
family × width × sparsity values; see `ablation.grid`), `train`/`optim`/`data`/`mesh` (as in an
SAE training config, shared by every SAE of the grid) and `evals`.
"""

from __future__ import annotations

import ml_collections

from jaxsae import config_check, main_job
from jaxsae.ablation import grid as grid_lib
from jaxsae.errors import ConfigError
from jaxsae.sae import train_config

REFERENCE_K = (8, 16, 32)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  main = main_job.base_config("topk")
  c.seed = 0
  c.harvest = main.harvest
  c.harvest.eval_windows = 256  # Held-out windows: metrics, ΔCE, contexts and N2G.

  c.grid = ml_collections.ConfigDict()
  # (family, width, values): values are k for topk/batchtopk families and for JumpReLU (its
  # recipe targets an L0 of k), λ for the others. The λ ladders are four wide so that they
  # bracket L0 ≈ 8–32 on the shipped model's blocks.1.resid_post at the default learning rate
  # (6e-4/√(n/2¹⁴)), set from the peer study's ladders at that rate (ReLU: λ 0.021 → L0 9.4;
  # Gated, its encoder scale fitted at init and β1 0.9: 0.025 → 8.2, 0.02 → 10.8, 0.012 → 21);
  # retune them for another model, hook or training length.
  w = 1024
  c.grid.runs = (
    ("topk", w, REFERENCE_K),
    ("topk_multi", w, REFERENCE_K),
    ("batchtopk", w, REFERENCE_K),
    ("relu", w, (0.03, 0.015, 0.008, 0.004)),
    ("gated", w, (0.028, 0.018, 0.012, 0.007)),
    ("prolu_relu", w, (0.02, 0.012, 0.007, 0.004)),
    ("prolu_ste", w, (0.02, 0.012, 0.007, 0.004)),
    ("jumprelu", w, REFERENCE_K),
    # Widths for the scaling laws (TopK at every k) and dead latents against width.
    ("topk", 256, REFERENCE_K),
    ("topk", 512, (16,)),
    ("topk", 2048, (16,)),
    ("topk_plain", 256, (16,)),
    ("topk_plain", w, (16,)),
    ("topk_plain", 2048, (16,)),
    ("relu", 256, (0.015,)),
    ("relu", 2048, (0.015,)),
  )
  c.grid.reference_family = "topk"  # Scaling laws are fitted on this family's runs.
  c.grid.reference_width = w  # Interpretability and recovery are measured at this width,
  c.grid.reference_index = 1  # on each family's value of this index (k = 16 for TopK).
  c.grid.family_settings = ml_collections.ConfigDict()  # <family>.<sae field>: value.

  sae = train_config.base_config()
  c.train, c.optim, c.mesh = sae.train, sae.optim, sae.mesh
  c.data = ml_collections.ConfigDict(
    {k: sae.data[k] for k in ("normalization_samples", "b_dec_init", "b_dec_samples")}
  )
  c.train.steps = 1800  # 922k tokens, 1.8 passes over the training store.
  c.train.batch_size = 512
  c.train.log_every = 50
  c.train.checkpoint_every = 600
  c.train.dead_window_tokens = 300_000  # A third of training: long enough to call a latent dead.

  c.evals = ml_collections.ConfigDict()
  c.evals.probe_windows = 256  # Labelled validation windows (half fit the probes, half score).
  c.evals.n2g_latents = 512  # Latents explained per SAE (-1: all).
  c.evals.browser_latents = 96  # Latents with a page in each feature browser.
  c.evals.browser_families = ("topk", "relu")
  c.evals.ablation_latents = 32  # Latents ablated per SAE for ablation sparsity.
  c.evals.ablation_windows = 4  # Held-out windows those ablations run on.
  c.evals.refine_rows = 4096  # Held-out rows re-optimized for activation shrinkage.
  c.evals.refine_steps = 100
  # TopK(k′) and threshold activations at test time, as multiples of each SAE's L0.
  c.evals.recovery_multiples = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
  return c


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raise one ConfigError with every problem; return the grid's SAE training config."""
  p: list[str] = []
  schema = base_config()
  if "grid" in config and "family_settings" in config.grid:  # Free-form, checked below.
    schema.grid.family_settings = config.grid.family_settings
  config_check.validate(config, schema)
  h, e = config.harvest, config.evals
  for name in ("seq_len", "train_windows", "eval_windows", "batch_size", "chunk_rows"):
    config_check.require(h[name] >= 1, p, f"harvest.{name}={h[name]} must be at least 1")
  for name in ("probe_windows", "browser_latents", "ablation_latents", "ablation_windows"):
    config_check.require(e[name] >= 0, p, f"evals.{name}={e[name]} must be >= 0")
  config_check.require(e.refine_rows >= 1, p, "evals.refine_rows must be at least 1")
  for family in e.browser_families:
    config_check.require_choice(family, list(grid_lib.FAMILIES), "evals.browser_families", p)
  config_check.require(
    len(e.recovery_multiples) > 0 and all(m > 0 for m in e.recovery_multiples),
    p,
    f"evals.recovery_multiples={tuple(e.recovery_multiples)} must be positive multiples of L0",
  )
  p.extend(grid_lib.problems(config.grid))
  if p:
    raise ConfigError(p)
  training = grid_lib.training_config(config)
  train_config.validate(training, n_devices=None)
  return training
