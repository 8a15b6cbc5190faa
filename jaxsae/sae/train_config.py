"""The schema of an SAE training config, with every field's meaning, and its checks.

Experiment configs (`experiments/configs/sae_*.py`) start from `base_config()`; `validate`
rejects unknown keys (with a close-match suggestion) and bad values, all at once, before any
compute. Fields of `sae` are those of `jaxsae.sae.config.SAEConfig` (see its docstring).
"""

from __future__ import annotations

import difflib

import ml_collections
from ml_collections import config_dict

from jaxsae import config_check, nonfinite, sharding
from jaxsae.sae import registry, sweep

# Each architecture's paper recipe, on inputs scaled to E‖x̃‖² = d: the fields of `sae` that
# differ from the defaults below. λ values were tuned on the synthetic benchmark
# (experiments/configs/sae_synthetic.py) to land near L0 ≈ 4–8; retune them for new data.
# JumpReLU's penalty targets an L0 of `sae.k` (Gemma Scope 2's quadratic penalty, `jumprelu.py`)
# instead of needing a λ per L0: on the main job's activations at L0 16 (seed 0) it reached FVU
# 0.0898 against 0.106 with the paper's λ·L0 read off a λ ladder. λ = 1 with the gradient norm
# clipped at 1/d (optim.clip_norm = -1) is SAELens's recipe on our error (a mean over d, theirs
# a sum). Both matter together: the tight clip lands the targets (held-out L0 12.4, 16.6, 25.2
# for 12, 16, 24), so the weak λ can leave the reconstruction alone. At L0 16 against λ 0.03 /
# clip 1 (the previous recipe), docs/quality (experiments/peer_quality): FVU 0.0877 against
# 0.0902 (4 seeds) at 1,500 steps and 0.0757 against 0.0936 at 15,000 (SAELens: 0.0896;
# 0.0803). The clip alone costs FVU (0.0996 at 15,000 steps, target 12); SAELens's ε = 0.05,
# θ₀ = 0.01 on top cost too (0.0881 against 0.0858, same run), so ε = θ₀ = 0.1 stay.
RECIPES: dict[str, dict] = {
  "topk": {},
  "batchtopk": {},
  "relu": {"sparsity_coefficient": 0.05},
  "gated": {"sparsity_coefficient": 0.06},
  "prolu_relu": {"sparsity_coefficient": 0.04},
  "prolu_ste": {"sparsity_coefficient": 0.04},
  "jumprelu": {
    "sparsity_coefficient": 1.0,
    "jumprelu_bandwidth": 0.1,
    "jumprelu_init_threshold": 0.1,
    "jumprelu_penalty": "target",
  },
}


def base_config(architecture: str = "topk") -> ml_collections.ConfigDict:
  """Every field with its default, `sae` set to `architecture`'s recipe, and every other
  architecture's recipe in `overrides` (so a sweep over architectures uses each one's own).
  `architecture`'s own recipe is in `sae` only, so `--config.sae.<field>` changes it (held in
  `overrides` too, the recipe silently won over the flag)."""
  c = _defaults()
  for name, recipe in RECIPES.items():
    for key, value in recipe.items():
      if name != architecture:
        c.overrides[name][key] = value
  c.sae.architecture = architecture
  c.sae.update(RECIPES.get(architecture, {}))
  return c


def _defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # SAE init (per sweep member: `sweep.seed`) and data order.

  c.sae = ml_collections.ConfigDict()
  c.sae.architecture = "topk"  # relu | topk | batchtopk | gated | prolu_relu | prolu_ste | jumprelu
  c.sae.n_latents = 1024  # Dictionary size n.
  c.sae.k = 4  # Active latents per token (topk, batchtopk).
  c.sae.k_aux = -1  # AuxK latents; -1: d_in // 2; 0: AuxK off.
  c.sae.aux_alpha = 1.0 / 32  # AuxK coefficient.
  c.sae.multi_topk = False  # Add L(4k)/8 (TopK only).
  c.sae.matryoshka = ()  # Nested prefix sizes for the Matryoshka loss; () is off.
  c.sae.sparsity_coefficient = 0.0  # λ of the L1 / L0 penalty (relu, gated, prolu, jumprelu).
  # "unit" | "penalty" (‖w_i‖-weighted L1) | "auto" (the recipe's: see SAEConfig.decoder_norm).
  c.sae.decoder_norm = "auto"
  c.sae.prolu_penalty = "l1"  # "l1" | "sqrt_l1".
  c.sae.jumprelu_bandwidth = -1.0  # ε; -1: 0.001·√d.
  c.sae.jumprelu_init_threshold = -1.0  # θ₀; -1: 0.001·√d.
  c.sae.jumprelu_fit_threshold = False  # True: θ₀ per latent from the initial sample (L0 ≈ k).
  # JumpReLU's penalty: "l0" (λ·L0, the paper's) or "target" (λ·(2/k)(L0 − k)², Gemma Scope 2).
  c.sae.jumprelu_penalty = "l0"
  # EMA decay of BatchTopK's inference threshold; 0.99 forgets the first batches' within a
  # few hundred steps, as a short run needs (SAEConfig.batchtopk_momentum).
  c.sae.batchtopk_momentum = 0.99
  c.sae.tied_init = True  # W_enc = W_decᵀ at init (TopK paper); False: independent.
  # W_enc's scale at init; -1: fitted so the first reconstruction is least-squares (TopK,
  # BatchTopK; 1 for the others). A unit-norm tied encoder overshoots: each of the k chosen
  # latents adds its whole projection (see SAEConfig.encoder_init_scale).
  c.sae.encoder_init_scale = -1.0
  # W_dec's row norm at init; -1: 0.1 for a free (penalty) decoder (April 2024), else 1.
  c.sae.decoder_init_norm = -1.0
  c.sae.topk_path = "auto"  # TopK training: "sparse" | "dense" | "auto" (sparse when n ≥ 32k).
  c.sae.compute_dtype = "float32"  # Matmul operands; "bfloat16": mixed precision, f32 params.
  c.sae.skip = False  # Skip connection ŷ += x W_skip (a skip transcoder; zero at init).
  # L > 1: a cross-layer transcoder over L layers, fed L sites side by side (inputs and targets
  # each L·d wide, `row_sources.StackedSource`); n_latents counts every layer's features.
  c.sae.layers = 1
  c.sae.cross_layer = (
    True  # False with layers > 1: per-layer transcoders of all L, trained at once.
  )

  # Lists to sweep over; their product is trained in one pass (empty: the value above).
  c.sweep = ml_collections.ConfigDict()
  c.sweep.architecture = ()
  c.sweep.k = ()
  c.sweep.sparsity_coefficient = ()
  c.sweep.aux_alpha = ()
  c.sweep.seed = ()

  # Per-architecture settings for sweeps over architectures: overrides.<arch>.<sae field> replaces
  # the `sae` value for that architecture's SAEs (None: keep it). E.g. each its own λ.
  c.overrides = ml_collections.ConfigDict({arch: _placeholders(c.sae) for arch in registry.names()})
  # Named groups beside the architectures, listed in sweep.architecture by name:
  # variants.<name> = dict(architecture="topk", n_latents=4096, multi_topk=True, sweep=dict(k=(8,)))
  # takes that architecture's settings, replaces the given `sae` fields and, for each list named
  # in its own `sweep`, uses that list instead of the global one. Empty: no variants.
  c.variants = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  # "synthetic" (known features, below) or "npy:/path/rows.npy" (a (tokens, d) float array).
  c.data.source = "synthetic"
  # A transcoder's targets: "npy:/path/rows.npy", the same tokens as data.source's rows, row by
  # row, at the site it writes (e.g. blocks.L.mlp.out for inputs at blocks.L.mlp.in), each site
  # with its own scale. Empty: the inputs themselves (an SAE). Code that calls train() directly
  # passes a jaxsae.sae.row_sources.PairSource (e.g. two hooks of one activation store) instead.
  c.data.target = ""
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.d = 64  # Activation width.
  c.data.synthetic.n_features = 256  # Known unit directions.
  c.data.synthetic.active = 4.0  # Mean active features per token.
  c.data.synthetic.noise = 0.05  # Norm of the added Gaussian noise.
  c.data.synthetic.tokens = 1 << 17  # Training rows (evaluation uses another 1/8 as many).
  c.data.synthetic.seed = 0
  c.data.normalization_samples = 8192  # Rows used to estimate the input scale c.
  c.data.b_dec_init = "geometric_median"  # "geometric_median" | "mean" | "zeros".
  c.data.b_dec_samples = 4096  # Rows the geometric median is computed on.

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000  # Optimizer steps.
  c.train.batch_size = 1024  # Global tokens per step; divisible by the data axis.
  c.train.dead_window_tokens = 10_000_000  # Unfired this many tokens = dead (TopK paper).
  c.train.sparsity_warmup_fraction = 0.05  # λ rises linearly over this share of training.
  c.train.log_every = 100  # Steps between metric records.
  c.train.checkpoint_every = 1000  # Steps between checkpoints.
  c.train.keep_checkpoints = 2  # Checkpoints kept on disk.
  c.train.async_checkpoints = True  # Write checkpoints in the background.
  # NaN/Inf in a step's loss, gradients or activations: "stop" raises, naming the step, batch
  # and last good checkpoint; "skip" leaves that SAE unchanged for the batch and counts it.
  c.train.on_nonfinite = "stop"

  # Adam with linear warmup, a constant phase and a linear decay to zero. Warmup and decay are
  # shares of the run, so a schedule means the same at every length (a fixed 100-step warmup
  # was 7% of the main job's 1,500 steps). Measured on the main job's activations (n = 1024,
  # k = 16, held-out FVU):
  # - warmup_fraction 0: the TopK paper warms up λ, not the lr, and a unit-norm tied decoder
  #   with a fitted encoder scale needs none; any lr warmup cost FVU (1,500 steps: 0.0870 with
  #   none, 0.0873 with 1%, 0.0916 with 5%).
  # - decay_fraction 0.2 (TopK paper): at 5,000 steps it beats a constant lr (0.0716 against
  #   0.0726); at 1,500 it is within seed noise of it (0.0870 against 0.0864).
  c.optim = ml_collections.ConfigDict()
  # lr -1: 6e-4 / √(n / 2¹⁴), the TopK paper's 1/√n law at 3× its constant, measured best at
  # 1,500 and 15,000 steps for TopK and better for every λ family (`optim.LR_CONSTANT`).
  c.optim.lr = -1.0
  c.optim.warmup_fraction = 0.0  # Share of training over which lr rises linearly from 0.
  c.optim.warmup_steps = -1  # ≥ 0: this many warmup steps instead of warmup_fraction.
  c.optim.decay_fraction = 0.2  # Share of training at the end over which lr decays to 0.
  c.optim.b1 = -1.0  # -1: the architecture's (0.9; 0 for jumprelu).
  c.optim.b2 = 0.999
  c.optim.eps = 6.25e-10  # OpenAI's TopK code.
  # Per-SAE global gradient-norm clip; 0: none; -1: the architecture's (1; 1/d for JumpReLU's
  # target penalty, SAELens's clip of 1 on an error summed over d, as `jumprelu.py` explains).
  c.optim.clip_norm = -1.0
  # JumpReLU θ's learning rate as a multiple of lr. Under Adam every W_enc entry of a latent
  # moves by about lr a step, so its pre-activation can move by lr·‖x̃‖ ≈ lr·√d while θ moves by
  # lr: short runs leave L0 where the encoder's growth puts it (`clt_gemma3.py`).
  c.optim.threshold_lr_scale = 1.0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Devices on the data axis; -1: all that `model` leaves.
  c.mesh.model = 1  # Devices the latents are split over.
  c.mesh.distributed = False  # Call jax.distributed.initialize() (multi-host pods).
  return c


def _placeholders(sae: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A ConfigDict with every `sae` field, all None, each typed like its `sae` counterpart."""
  return ml_collections.ConfigDict(
    {
      name: config_dict.placeholder(tuple if name == "matryoshka" else type(value))
      for name, value in sae.items()
      if name != "architecture"
    }
  )


def plan(
  config: ml_collections.ConfigDict, d_in: int, d_out: int | None = None
) -> list[sweep.Group]:
  """The sweep groups of a validated config, for activations of width `d_in` (and a
  transcoder's targets of width `d_out`; None: SAEs)."""
  overrides = {
    arch: {k: v for k, v in fields.items() if v is not None}
    for arch, fields in config.overrides.to_dict().items()
  }
  return sweep.plan(
    config.sae.to_dict(),
    config.sweep.to_dict(),
    config.seed,
    d_in,
    overrides,
    variants(config),
    d_out,
  )


def variants(config: ml_collections.ConfigDict) -> dict[str, dict]:
  variants = config.get("variants")
  return variants.to_dict() if hasattr(variants, "to_dict") else dict(variants or {})


def _variant_problems(c: ml_collections.ConfigDict) -> list[str]:
  p: list[str] = []
  fields = set(c.sae.keys()) - {"architecture"}
  for name, variant in variants(c).items():
    where = f"variants.{name}"
    if not isinstance(variant, dict):
      p.append(f"{where} must be a dict(architecture=..., <sae field>=..., sweep=dict(...))")
      continue
    config_check.require(
      name not in registry.names(),
      p,
      f"{where}: a variant may not be named like an architecture; rename it (e.g. {name}_v)",
    )
    if "architecture" not in variant:
      p.append(f'{where} lacks "architecture"; add one of {list(registry.names())}')
    else:
      config_check.require_choice(
        variant["architecture"], registry.names(), f"{where}.architecture", p
      )
    for key in set(variant) - fields - {"architecture", "sweep"}:
      close = difflib.get_close_matches(key, sorted(fields | {"sweep"}), n=1)
      hint = f'; did you mean "{close[0]}"?' if close else ""
      p.append(f'unknown key "{where}.{key}"{hint}')
    for key, values in dict(variant.get("sweep") or {}).items():
      config_check.require(
        key in sweep.SWEEPABLE,
        p,
        f'unknown key "{where}.sweep.{key}"; sweepable: {list(sweep.SWEEPABLE)}',
      )
      config_check.require(
        isinstance(values, (tuple, list)),
        p,
        f"{where}.sweep.{key}={values!r} must be a tuple of values, e.g. (16, 32)",
      )
  return p


def _check_values(c, p: list[str], d_in: int | None, d_out: int | None = None) -> None:
  req = config_check.require
  for name in ("steps", "batch_size", "log_every", "checkpoint_every", "dead_window_tokens"):
    req(c.train[name] >= 1, p, f"train.{name}={c.train[name]} must be at least 1")
  req(c.train.keep_checkpoints >= 1, p, "train.keep_checkpoints must be at least 1")
  config_check.require_choice(c.train.on_nonfinite, nonfinite.CHOICES, "train.on_nonfinite", p)
  req(
    0 <= c.train.sparsity_warmup_fraction <= 1,
    p,
    "train.sparsity_warmup_fraction must be in [0, 1]",
  )
  req(c.optim.lr == -1 or c.optim.lr > 0, p, f"optim.lr={c.optim.lr} must be positive (or -1)")
  req(
    c.optim.warmup_steps >= -1,
    p,
    "optim.warmup_steps must be >= 0 (or -1: use optim.warmup_fraction)",
  )
  req(0 <= c.optim.warmup_fraction < 1, p, "optim.warmup_fraction must be in [0, 1)")
  req(0 <= c.optim.decay_fraction <= 1, p, "optim.decay_fraction must be in [0, 1]")
  req(
    c.optim.warmup_steps >= 0 or c.optim.warmup_fraction + c.optim.decay_fraction <= 1,
    p,
    f"optim.warmup_fraction + optim.decay_fraction = "
    f"{c.optim.warmup_fraction + c.optim.decay_fraction:g} must be at most 1",
  )
  req(c.optim.b1 == -1 or 0 <= c.optim.b1 < 1, p, "optim.b1 must be in [0, 1) (or -1)")
  req(0 <= c.optim.b2 < 1, p, "optim.b2 must be in [0, 1)")
  req(c.optim.eps > 0, p, "optim.eps must be positive")
  req(
    c.optim.get("threshold_lr_scale", 1.0) > 0,
    p,
    "optim.threshold_lr_scale must be positive (1: θ at the learning rate of the rest)",
  )
  req(
    c.optim.clip_norm == -1 or c.optim.clip_norm >= 0,
    p,
    "optim.clip_norm must be >= 0 (0 disables clipping) or -1 (the architecture's)",
  )
  config_check.require_choice(
    c.data.b_dec_init, ("geometric_median", "mean", "zeros"), "data.b_dec_init", p
  )
  req(c.data.normalization_samples >= 1, p, "data.normalization_samples must be at least 1")
  source = str(c.data.source)
  req(
    source == "synthetic" or source.startswith("npy:"),
    p,
    f"data.source={source!r} must be 'synthetic' or 'npy:/path/to/rows.npy'",
  )
  target = str(c.data.target)
  req(
    not target or (target.startswith("npy:") and source.startswith("npy:")),
    p,
    f"data.target={target!r} must be empty (an SAE) or 'npy:/path/to/target_rows.npy' beside "
    "an npy data.source (the same tokens, row by row)",
  )
  sweep_problems: list[str] = []
  for name in sweep.SWEEPABLE + ("architecture",):
    values = c.sweep[name]
    req(
      isinstance(values, (tuple, list)),
      sweep_problems,
      f"sweep.{name}={values!r} must be a tuple of values, e.g. (16, 32)",
    )
  sweep_problems.extend(_variant_problems(c))
  groups = [*registry.names(), *variants(c)]
  for arch in c.sweep.architecture or ():
    config_check.require_choice(arch, groups, "sweep.architecture", sweep_problems)
  p.extend(sweep_problems)
  if sweep_problems:
    return
  # Every SAE the sweep would build, checked as an SAEConfig (k ≤ n, known architecture, …).
  for group in _groups_or_problems(c, d_in or 1, p, d_out):
    for i in range(group.size):
      try:
        group.member_config(i)
      except ValueError as e:
        p.extend(q for q in getattr(e, "problems", [str(e)]) if q not in p)


def _groups_or_problems(c, d_in: int, p: list[str], d_out=None) -> list[sweep.Group]:
  try:
    return plan(c, d_in, d_out)
  except ValueError as e:
    p.extend(q for q in getattr(e, "problems", [str(e)]) if q not in p)
    return []


def validate(
  config: ml_collections.ConfigDict,
  n_devices: int | None = None,
  d_in: int | None = None,
  d_out: int | None = None,
) -> None:
  """Raise one ConfigError listing every problem of `config`, including the batch's split over
  `n_devices` and the latents' split over the model axis (`d_out`: a transcoder's)."""

  def check_devices(c, p):
    if n_devices is None:
      return
    problem = sharding.divisibility_problem(
      c.train.batch_size, c.mesh.data, n_devices, c.mesh.model
    )
    if problem:
      p.append(f"train.batch_size: {problem}")
    widths = {c.sae.n_latents} | {
      v["n_latents"] for v in variants(c).values() if isinstance(v, dict) and "n_latents" in v
    }
    for width in sorted(widths):
      if c.mesh.model >= 1 and width % c.mesh.model:
        p.append(
          f"n_latents={width} is not divisible by mesh.model={c.mesh.model}; "
          f"use a multiple of {c.mesh.model}"
        )

  schema = _defaults()
  if "variants" in config:  # Variants are free-form; `_variant_problems` checks them.
    schema.variants = config.variants
  config_check.validate(
    config, schema, [lambda c, p: _check_values(c, p, d_in, d_out), check_devices]
  )
