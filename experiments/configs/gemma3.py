"""Gemma 3 270M: test-split loss, harvest speed against transformers, TopK / JumpReLU / ReLU SAEs
at L0 ≈ 32 on a middle layer's residual stream, and SmoothQuant on its real outlier channels.

python -m experiments.gemma3 --workdir=runs/gemma3 --publish=docs/gemma3

Sized so that the whole run fits in 60 minutes on 2 CPU cores (see docs/gemma3/RESULTS.md for
the measured stage times). Every field of jaxsae/gemma3_study.py's base_config (and so of the
main job's) can be overridden, e.g. --config.harvest.hook=blocks.6.resid_post.

λ calibration. Short sweeps on a 1024-window store of this hook (130k activations), 800 steps
of 256 at lr 1e-3, every member of a family in one vmapped pass; held-out L0 (FVU) after training:

  ReLU      λ = 0.0006 → 166 (0.204)   0.002 → 15.1 (0.416)   0.006 → 1.5 (1.078, collapsed)
  JumpReLU  λ = 0.03   → 18.2 (0.249)  0.1   → 11.8 (0.237)   0.3   → 8.0 (0.232)

(at lr 2e-4 ReLU collapsed for every λ ≥ 0.01 and JumpReLU sat at L0 50-80 for λ 0.1-1). Fitting
L0 ∝ λ^-p through the two values either side of 32 (p = 2.0 for ReLU, 0.36 for JumpReLU) gives
λ = 0.0014 for ReLU and 0.006 for JumpReLU, used below at batch 1024.
"""

from jaxsae.gemma3_study import base_config


def get_config():
  c = base_config()
  c.seed = 0  # Window sampling, SAE init and data order.
  # --- the model and the activations ---
  c.harvest.model = "gemma-3-270m"  # The installed package: base Gemma 3 270M, Q4_K_M → float32.
  # Block 9 of 0–17: the middle of the residual stream (the TopK paper reads GPT-2 at 8 of 12;
  # Gemma Scope's 270M-class releases cover middle layers), and the harvest runs 10 of 18 blocks.
  c.harvest.hook = "blocks.9.resid_post"
  c.harvest.corpus = "stdlib"  # The Python standard library, split by file as for every model.
  c.harvest.pattern = "**/*.py"
  c.harvest.seq_len = 128  # Tokens per window: the BOS + 127 corpus tokens.
  c.harvest.bos = True  # Gemma is trained with a BOS first; without it its loss nearly doubles.
  c.harvest.skip_first = 1  # Position 0 (the BOS: the attention sink, ~15x the norm) is left out.
  c.harvest.skip_separator = True  # Document separators (BOS tokens mid-window) are left out.
  c.harvest.train_windows = 3072  # Random train-split windows: 3072 × 127 = 390k activations.
  c.harvest.eval_windows = 128  # Validation-split windows: 16k held-out activations.
  c.harvest.batch_size = 16  # Windows per harvest forward.
  c.harvest.chunk_rows = 8192  # Rows per store chunk (the unit of shuffled reading).
  c.harvest.dtype = "bfloat16"  # Training store (the held-out one is float32): 0.5 GB.
  c.harvest.streaming = False  # Harvest once, read twice.
  # --- the SAEs: three architectures in one pass over the batches ---
  c.sweep.architecture = ("topk", "jumprelu", "relu")
  c.sae.n_latents = 16384  # 25.6 × d_model (640).
  c.sae.k = 32  # TopK's L0; JumpReLU and ReLU are calibrated to land near it (λ below).
  c.sae.topk_path = "sparse"  # TopK's decoder gathers its k rows: 2× faster here than dense.
  c.overrides.jumprelu.sparsity_coefficient = 0.006  # λ of λ·L0 (calibration in the docstring).
  # The paper's λ·L0 with unit-norm decoder rows, as calibrated above (the recipe's default is
  # now an L0 target of k with a free decoder).
  c.overrides.jumprelu.jumprelu_penalty = "l0"
  c.overrides.jumprelu.decoder_norm = "unit"
  c.overrides.relu.sparsity_coefficient = 0.0014  # λ of λ Σ z_i ‖w_i‖ (calibration likewise).
  c.train.steps = 800  # Optimizer steps.
  c.train.batch_size = 1024  # Activations per step: 819k tokens, 2.1 passes over the store.
  c.train.log_every = 50  # Steps between metric records.
  c.train.checkpoint_every = 200  # Steps between checkpoints (resume after an interruption).
  c.train.dead_window_tokens = 200_000  # Unfired this long (a quarter of training) = dead.
  # 5× the TopK paper's 2e-4 at n = 2^14: training is short. TopK alone, 400 steps of 1024 on a
  # 1024-window store of this hook: held-out FVU 0.219 / 0.134 / 0.107 at lr 2e-4 / 6e-4 / 1.5e-3.
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50  # Learning-rate warmup steps.
  c.data.normalization_samples = 8192  # Rows for the input scale and the baselines' sample.
  # --- the model's own loss ---
  c.lm_eval.split = "test"  # The held-out test split.
  c.lm_eval.max_windows = 0  # All of it (1,032 windows, 131k tokens).
  c.lm_eval.batch_size = 8  # Windows per forward (8 × 128 × 262k logits = 1 GB).
  # --- the harvest forward beside transformers ---
  c.speed.windows = 32  # Held-out windows timed through both (4k tokens).
  c.speed.batch_size = 16  # As the harvest's.
  c.speed.repeats = 3  # Passes per side, in turns; median.
  # --- spliced evaluation ---
  c.evals.delta_ce_windows = 24  # Held-out windows for ΔCE, CE recovered and KL (3k tokens).
  c.evals.batch_size = 8  # Windows per spliced forward (8 × 128 × 262k logits = 1 GB each).
  # --- SmoothQuant on the same model ---
  sq = c.smoothquant
  sq.models = "gemma-3-270m"  # The study's model list: this one only.
  sq.corpus, sq.pattern = "stdlib", "**/*.py"  # As the harvest's.
  sq.seq_len = 128  # As the harvest's.
  sq.bos = True  # As the harvest's.
  sq.calibration_windows = 64  # Training-split windows for the channel statistics (8k tokens).
  sq.eval_windows = 16  # Test-split windows scored per scheme (2k tokens).
  sq.batch_size = 8  # Windows per forward.
  sq.percentile_rows = 8192  # Tokens per input kept for the percentiles.
  sq.alphas = (0.4, 0.6, 0.8)  # Migration strengths (SmoothQuant: 0.5 for most models).
  sq.activation_modes = ("per_token", "per_tensor", "per_tensor_static")  # O1 … O3.
  sq.weights = "per_channel"  # int8 weights per output channel.
  sq.smooth_sites = ("attn.in", "mlp.in")  # Folded into the (1 + w) RMSNorms before them.
  sq.outlier.models = ""  # No injected outlier channel: the model's own.
  return c
