"""One SAE's configuration: a frozen, hashable dataclass saved as JSON beside its weights.

Fields an architecture does not use are ignored by it (and reported by `problems()` only when
they are set to something that cannot work). Inputs are assumed scaled so that E‖x̃‖² = d
(`jaxsae.sae.normalization`); every default below is on that scale.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from jaxsae import config_check
from jaxsae.errors import ConfigError

DECODER_NORMS = ("auto", "unit", "penalty")
PROLU_GRADIENTS = ("relu", "ste")
PROLU_PENALTIES = ("l1", "sqrt_l1")
JUMPRELU_PENALTIES = ("l0", "target")
TOPK_PATHS = ("auto", "sparse", "dense")
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class SAEConfig:
  """A sparse dictionary ŷ = f(x W_enc + b_enc) W_dec + b_dec (+ x W_skip) (jaxsae/sae/*.py):
  an SAE (ŷ reconstructs x) or a transcoder (ŷ predicts another site's activations y).

  architecture:     registry name: relu, topk, batchtopk, gated, prolu_relu, prolu_ste, jumprelu.
  d_in:             width of the activations (the input x).
  d_out:            width of the target y the decoder writes; -1 means d_in (`d_target`).
  transcode:        the target is another site (a transcoder, e.g. MLP input → MLP output): the
                    encoder reads x as it is, pre = x W_enc + b_enc, since b_dec is the output's
                    bias (an SAE subtracts it first); W_enc starts independent of W_decᵀ (they
                    live in different spaces). The trainer sets it (and d_out) when it is fed
                    (input, target) pairs (`data.target`).
  skip:             a skip connection ŷ += x W_skip (d_in × d_out, zero at init): a skip
                    transcoder (Paulo et al. 2025, "Transcoders beat sparse autoencoders").
  tanh_c:           c > 0: relu's and jumprelu's sparsity term is λ Σ_i tanh(c·|z_i|·‖w_i‖)
                    (Anthropic, "Circuit Tracing" 2025: ‖w_i‖ over every layer a CLT's feature
                    writes), in place of the L1 / L0 term; it saturates near |z_i|‖w_i‖ = 2/c,
                    so large activations stop paying. -1: off.
  layers:           L > 1: a cross-layer transcoder (`jaxsae.sae.cross_layer`). x and y are L
                    layers' activations side by side (d_in = L·d, d_out = L·d_out per layer),
                    n_latents counts every layer's features (n/L per layer), and a feature of
                    layer l reads x_l and writes y_l′ for every l′ ≥ l. 1: one site.
  cross_layer:      with layers > 1, False keeps each feature to its own layer (l′ = l):
                    per-layer transcoders of every layer, trained together from one forward
                    pass (their loss is the same sum of per-layer normalized errors; W_dec
                    is n × d_out/L, each row its own layer's block).
  n_latents:        dictionary size n.
  k:                active latents per token (topk; batchtopk keeps k·B over a batch of B).
  k_aux:            AuxK: how many dead latents reconstruct the residual; 0 turns AuxK off;
                    -1 means d_in // 2 (TopK paper).
  aux_alpha:        AuxK coefficient α (TopK paper: 1/32).
  multi_topk:       add L(4k)/8 on the same pre-activations (TopK paper, Multi-TopK).
  matryoshka:       nested prefix sizes m; the reconstruction term becomes the sum over them of
                    the error of the first m latents (n is always included). Empty: off.
  sparsity_coefficient: λ of the L1 (relu, gated, prolu) or L0 (jumprelu) penalty.
  decoder_norm:     "unit": decoder rows kept at norm 1 (gradient projection + renormalization);
                    "penalty": decoder free, the L1 penalty weighted by ‖w_i‖ (Anthropic, April
                    2024); "auto": the architecture's recipe (relu → penalty; jumprelu →
                    free, as SAELens trains it, no penalty to weight; others → unit).
  prolu_penalty:    "l1" or "sqrt_l1" (ProLU paper's √L1 variant).
  jumprelu_bandwidth: ε of the rectangle kernel. The paper's 0.001 is for E‖x̃‖² = 1; here
                    -1 means 0.001·√d, the same value on our E‖x̃‖² = d scale.
  jumprelu_init_threshold: θ₀, with the same convention (-1 means 0.001·√d).
  jumprelu_fit_threshold: True: θ₀ of each latent is instead the (1 − k/n) quantile of its
                    pre-activation on the trainer's initial sample (never below the fixed θ₀),
                    so training starts near L0 = k rather than with every latent whose
                    pre-activation clears the fixed θ₀ firing (~40% of a Gemma 3 CLT's), which
                    the target penalty takes hundreds of steps to bring down.
  jumprelu_penalty: "l0": λ·L0 (the paper's eq. 10); "target": λ·(2/k)·(L0 − k)² per token,
                    Gemma Scope 2's quadratic penalty around a target L0 of k (as SAELens's
                    "quadratic" mode), so k sets the L0 and λ how firmly.
  batchtopk_momentum: EMA decay of the inference threshold (smallest kept activation). 0.99
                    (SAELens's threshold rate, 0.01) forgets the first batches' thresholds
                    within a few hundred steps; at 0.999 a 1,500-step run keeps 22% of its
                    first batch's (too high): held-out L0 11.9 instead of 16, FVU 0.103
                    against 0.089 at 0.99 (main job, seed 0). A batch of B tokens keeps kB
                    values, so its smallest is a stable statistic over 100 batches.
  tied_init:        W_enc = W_decᵀ at init (TopK paper); False draws W_enc independently (for
                    the paper's ablation of tied init against dead latents).
  encoder_init_scale: W_enc is s times those unit directions at init. -1 ("fit"): for
                    architectures whose code scales with W_enc (TopK, BatchTopK, Gated: a
                    positive scale does not change which latents are chosen), s is the
                    least-squares scale of the initial reconstruction on the init sample,
                    s = Σ⟨x̃ − b_dec, y⟩ / Σ‖y‖² with y = f(x̃ W) W_dec (`fitted_encoder_scale`);
                    1 for the others: JumpReLU's θ₀ makes the chosen set depend on s, and
                    ReLU's free decoder already starts the encoder at 0.1, where fitting cost
                    FVU (0.121 → 0.133 at L0 16 on the main job). Why: with s = 1 the k
                    chosen latents each add their full projection, and their directions, all
                    close to x̃, overlap, so the first reconstructions overshoot (initial FVU
                    0.80 at n=1024, k=16, d=128; 7.7 at n=4096, k=64), and the run spends its
                    first steps undoing it. The fitted s is 0.58 there (initial FVU 0.55) —
                    the scale OpenAI's TopK code and sparsify get from PyTorch's default
                    nn.Linear init (rows of norm ≈ 1/√3) — and falls with k/d (0.24 at k=64).
                    Main job, 1,500 steps, constant lr: held-out FVU 0.0916 → 0.0864.
  decoder_init_norm: the norm of W_dec's rows at init. -1: 0.1 where the decoder is free
                    (decoder_norm "penalty": ReLU's April-2024 recipe, "W_d columns of norm
                    0.1", as SAELens initializes every SAE), 1 where it is kept at unit norm.
                    The tied encoder starts as W_decᵀ, so small too. Why: at norm 1 the
                    first codes are as large as the inputs' projections and the L1 term is at
                    its largest, with Adam's steps small beside the weights; held-out FVU of
                    ReLU at L0 16 on the main job, 0.28 at norm 1 against SAELens's 0.25.
  topk_path:        how TopK trains: "sparse" (gathers and scatter-adds of the k chosen latents,
                    `jaxsae.sae.sparse_topk`), "dense" (the B×n latent matrix) or "auto" (sparse
                    when n ≥ 32× the top-k width). Same numbers either way.
  compute_dtype:    dtype of the matmul operands: "float32", or "bfloat16" for mixed precision
                    (float32 accumulation and float32 parameters, optimizer and top-k).
                    JumpReLU's threshold gradient sees pre-activations within ε of θ, and
                    bfloat16 rounding of pre is about that size: its estimate gets noisier.
  """

  architecture: str
  d_in: int
  n_latents: int
  k: int = 32
  k_aux: int = -1
  aux_alpha: float = 1.0 / 32
  multi_topk: bool = False
  matryoshka: tuple[int, ...] = ()
  sparsity_coefficient: float = 0.0
  decoder_norm: str = "auto"
  prolu_penalty: str = "l1"
  jumprelu_bandwidth: float = -1.0
  jumprelu_init_threshold: float = -1.0
  jumprelu_fit_threshold: bool = False
  jumprelu_penalty: str = "l0"
  batchtopk_momentum: float = 0.99
  tied_init: bool = True
  encoder_init_scale: float = -1.0
  decoder_init_norm: float = -1.0
  topk_path: str = "auto"
  compute_dtype: str = "float32"
  d_out: int = -1
  transcode: bool = False
  skip: bool = False
  layers: int = 1
  cross_layer: bool = True
  tanh_c: float = -1.0

  def __post_init__(self):
    object.__setattr__(self, "matryoshka", tuple(int(m) for m in self.matryoshka))
    problems = self.problems()
    if problems:
      raise ConfigError(problems)

  # ---- derived values -------------------------------------------------------------------------
  @property
  def d_target(self) -> int:
    """Width of the decoder's output: d_out, or d_in for an SAE."""
    return self.d_in if self.d_out == -1 else self.d_out

  @property
  def d_layer(self) -> int:
    """Width of one layer's input: d_in, or d_in / L for a cross-layer transcoder."""
    return self.d_in // self.layers

  @property
  def d_layer_out(self) -> int:
    """Width of one layer's target: d_target, or d_target / L for a cross-layer transcoder."""
    return self.d_target // self.layers

  @property
  def aux_k(self) -> int:
    return self.d_in // 2 if self.k_aux == -1 else self.k_aux

  @property
  def bandwidth(self) -> float:
    return (
      0.001 * math.sqrt(self.d_layer) if self.jumprelu_bandwidth < 0 else self.jumprelu_bandwidth
    )

  @property
  def init_threshold(self) -> float:
    if self.jumprelu_init_threshold < 0:
      return 0.001 * math.sqrt(self.d_layer)
    return self.jumprelu_init_threshold

  @property
  def prefixes(self) -> tuple[int, ...]:
    """Matryoshka prefix sizes, ascending, ending with n_latents; (n_latents,) when off."""
    return tuple(sorted(set(self.matryoshka) | {self.n_latents}))

  # ---- validation ---------------------------------------------------------------------------
  def problems(self) -> list[str]:
    """Every invalid field, with its fix."""
    from jaxsae.sae import registry  # The registry imports the architectures, which import us.

    p: list[str] = []
    config_check.require_choice(self.architecture, registry.names(), "sae.architecture", p)
    for name in ("d_in", "n_latents"):
      value = getattr(self, name)
      config_check.require(
        isinstance(value, int) and value > 0, p, f"sae.{name}={value!r} must be a positive int"
      )
    if p:
      return p
    config_check.require(
      self.d_out == -1 or (isinstance(self.d_out, int) and self.d_out > 0),
      p,
      f"sae.d_out={self.d_out!r} must be a positive int, or -1 (d_in)",
    )
    config_check.require(
      self.transcode or self.d_target == self.d_in,
      p,
      f"sae.d_out={self.d_out} differs from d_in={self.d_in}: an SAE's encoder subtracts b_dec "
      "from its input, so a dictionary writing another width needs sae.transcode=True",
    )
    n = self.n_latents
    config_check.require(
      0 < self.k <= n,
      p,
      f"sae.k={self.k} must be in [1, n_latents={n}]; lower k or widen the dictionary",
    )
    config_check.require(
      self.k_aux == -1 or 0 <= self.k_aux <= n,
      p,
      f"sae.k_aux={self.k_aux} must be -1 (d_in // 2), 0 (off) or at most n_latents={n}",
    )
    config_check.require(
      not self.multi_topk or 4 * self.k <= n,
      p,
      f"sae.multi_topk needs 4k={4 * self.k} <= n_latents={n}; lower k or turn it off",
    )
    bad = [m for m in self.matryoshka if not 0 < m <= n]
    config_check.require(not bad, p, f"sae.matryoshka prefixes {bad} must be in [1, n_latents={n}]")
    config_check.require(
      self.sparsity_coefficient >= 0,
      p,
      f"sae.sparsity_coefficient={self.sparsity_coefficient} must be >= 0",
    )
    config_check.require(
      self.tanh_c == -1 or self.tanh_c > 0,
      p,
      f"sae.tanh_c={self.tanh_c} must be positive (the tanh penalty's c), or -1 (off)",
    )
    config_check.require(self.aux_alpha >= 0, p, f"sae.aux_alpha={self.aux_alpha} must be >= 0")
    config_check.require(
      not self.jumprelu_fit_threshold or self.architecture == "jumprelu",
      p,
      f"sae.jumprelu_fit_threshold fits a JumpReLU threshold, which {self.architecture} does "
      "not have; set it False",
    )
    config_check.require(
      self.encoder_init_scale == -1 or self.encoder_init_scale > 0,
      p,
      f"sae.encoder_init_scale={self.encoder_init_scale} must be positive, or -1 (fit at init)",
    )
    config_check.require(
      self.decoder_init_norm == -1 or self.decoder_init_norm > 0,
      p,
      f"sae.decoder_init_norm={self.decoder_init_norm} must be positive, or -1 (the recipe's)",
    )
    config_check.require_choice(self.decoder_norm, DECODER_NORMS, "sae.decoder_norm", p)
    config_check.require_choice(self.prolu_penalty, PROLU_PENALTIES, "sae.prolu_penalty", p)
    config_check.require_choice(
      self.jumprelu_penalty, JUMPRELU_PENALTIES, "sae.jumprelu_penalty", p
    )
    config_check.require_choice(self.topk_path, TOPK_PATHS, "sae.topk_path", p)
    config_check.require_choice(self.compute_dtype, COMPUTE_DTYPES, "sae.compute_dtype", p)
    config_check.require(
      0 <= self.batchtopk_momentum < 1,
      p,
      f"sae.batchtopk_momentum={self.batchtopk_momentum} must be in [0, 1)",
    )
    if self.layers != 1:
      from jaxsae.sae import cross_layer

      p.extend(cross_layer.config_problems(self))
    if not p:
      p.extend(registry.get(self.architecture).config_problems(self))
    return p

  # ---- serialization ------------------------------------------------------------------------
  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["matryoshka"] = list(self.matryoshka)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> SAEConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
      raise ConfigError([f"unknown SAE config field(s) {unknown}; known: {sorted(fields)}"])
    return cls(**{k: tuple(v) if k == "matryoshka" else v for k, v in d.items()})
