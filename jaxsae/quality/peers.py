"""The peers' own trainers, fed jaxsae's batches in jaxsae's order (`peers` extra: CPU torch,
sae-lens, eai-sparsify). Each returns the SAE as jaxsae reads it from the peer's own saved
format (`sparsify_format.load`, `saelens.load`), so what is evaluated is what a user of the peer
would get.

sparsify: its `Trainer` hooks a transformers model, so its per-step recipe is run here on the
same `SparseCoder` (sparsify/trainer.py, 1.3): b_dec set to the first batch's mean; each step
the decoder rows renormalized, loss = FVU (Σ‖y − ŷ‖² / Σ‖y − ȳ_batch‖²) + auxk_alpha · AuxK
(dead = unfired for dead_feature_threshold tokens), the gradient parallel to each decoder row
removed, then the optimizer. Its optimizers: "signum" (its default: schedule-free SignSGD,
momentum 0.95, lr 5e-3/√(n/2¹⁴), evaluated at the averaged weights) and "adam" (lr
2e-4/√(n/2¹⁴), linear warmup over `warmup_steps`, then linear decay to 0; `warmup_steps=-1` is
a constant rate, as the issue's measurement used).

SAELens: `SAETrainer.fit()` itself on its training SAE, with a data provider yielding the same
batches, then `save_inference_model` (SAELens folds its own normalizations there).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import time
from collections.abc import Iterator

import numpy as np

from jaxsae.bench import machine
from jaxsae.sae import saelens, sparsify_format
from jaxsae.sae.config import SAEConfig

# jaxsae architecture -> (SAELens training class, its config class, its sparsity-coefficient field).
SAELENS = {
  "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig", None),
  "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", None),
  "relu": ("StandardTrainingSAE", "StandardTrainingSAEConfig", "l1_coefficient"),
  "gated": ("GatedTrainingSAE", "GatedTrainingSAEConfig", "l1_coefficient"),
  "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig", "l0_coefficient"),
}


SIGNUM_LR = 5e-3  # sparsify's signum rate at n = 2¹⁴ (its default, scaled by 1/√(n/2¹⁴)).


@dataclasses.dataclass(frozen=True)
class PeerRun:
  """A trained peer SAE as jaxsae variables acting on raw activations."""

  config: SAEConfig
  variables: dict
  wall_s: float
  version: str


def missing(peer: str) -> str | None:
  """Why `peer` ("sparsify" or "saelens") cannot run here, or None."""
  module = {"sparsify": "sparsify", "saelens": "sae_lens"}[peer]
  absent = [m for m in ("torch", module) if importlib.util.find_spec(m) is None]
  return f"{' and '.join(absent)} not installed (pip install -e '.[peers]')" if absent else None


def _torch(threads: int | None):
  import torch

  torch.set_num_threads(threads or machine.usable_cpus())
  return torch


def train_sparsify(
  batches: Iterator[np.ndarray],
  workdir: str | pathlib.Path,
  *,
  n: int,
  k: int,
  steps: int,
  optimizer: str = "signum",
  lr: float | None = None,
  warmup_steps: int = 1000,
  auxk_alpha: float = 0.0,
  dead_feature_threshold: int = 10_000_000,
  seed: int = 0,
  threads: int | None = None,
) -> PeerRun:
  """sparsify's TopK SparseCoder trained on `steps` batches (see the module docstring)."""
  torch = _torch(threads)
  import sparsify
  from sparsify.config import SparseCoderConfig
  from sparsify.sparse_coder import SparseCoder

  first = torch.from_numpy(np.asarray(next(batches), np.float32))
  d = first.shape[1]
  torch.manual_seed(seed)
  sae = SparseCoder(d, SparseCoderConfig(num_latents=n, k=k), "cpu", dtype=torch.float32)
  scale = (n / 2**14) ** 0.5
  schedule = None
  if optimizer == "signum":
    from schedulefree import ScheduleFreeWrapper
    from sparsify.sign_sgd import SignSGD

    opt = ScheduleFreeWrapper(
      SignSGD([{"params": sae.parameters(), "lr": lr or SIGNUM_LR / scale}]), momentum=0.95
    )
    opt.train()
  elif optimizer == "adam":
    opt = torch.optim.Adam(sae.parameters(), lr=lr or 2e-4 / scale)
    if warmup_steps >= 0:
      from transformers import get_linear_schedule_with_warmup

      schedule = get_linear_schedule_with_warmup(opt, warmup_steps, steps)
  else:
    raise ValueError(f"sparsify optimizer {optimizer!r}: use 'signum' or 'adam'")
  since_fired = torch.zeros(n, dtype=torch.long)
  start = time.perf_counter()
  x = first
  for step in range(steps):
    if step:
      x = torch.from_numpy(np.asarray(next(batches), np.float32))
    if step == 0:
      sae.b_dec.data = x.mean(0)
    sae.set_decoder_norm_to_unit_norm()
    dead = since_fired > dead_feature_threshold if auxk_alpha > 0 else None
    out = sae(x, dead_mask=dead)
    (out.fvu + auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8).backward()
    sae.remove_gradient_parallel_to_decoder_directions()
    opt.step()
    opt.zero_grad()
    if schedule is not None:
      schedule.step()
    fired = torch.zeros(n, dtype=torch.bool)
    fired[out.latent_indices.flatten()] = True
    since_fired += x.shape[0]
    since_fired[fired] = 0
  if optimizer == "signum":
    opt.eval()  # Schedule-free: the averaged weights, as sparsify saves them.
  wall = time.perf_counter() - start
  folder = pathlib.Path(workdir)
  sae.save_to_disk(folder)
  config, variables = sparsify_format.load(folder)
  return PeerRun(config, variables, wall, getattr(sparsify, "__version__", "?"))


def train_saelens(
  architecture: str,
  batches: Iterator[np.ndarray],
  workdir: str | pathlib.Path,
  *,
  d: int,
  n: int,
  steps: int,
  batch_size: int,
  lr: float,
  k: int | None = None,
  sparsity_coefficient: float | None = None,
  seed: int = 0,
  threads: int | None = None,
  sae_options: dict | None = None,
  norm_batches: Iterator[np.ndarray] | None = None,
) -> PeerRun:
  """SAELens's `SAETrainer.fit()` on `steps` batches of `batch_size` rows, its defaults
  otherwise (constant learning rate, no warmup).

  `sae_options`: more fields of the SAELens training config (e.g. its JumpReLU's
  `jumprelu_sparsity_loss_mode`). With `normalize_activations="expected_average_only_in"`,
  SAELens estimates its input scale from 100 batches of `norm_batches` (other rows, so the
  training batches are the same as every other trainer's) and folds it into the saved SAE."""
  torch = _torch(threads)
  import itertools

  import sae_lens
  from sae_lens.config import LoggingConfig, SAETrainerConfig

  sae_class, config_class, coefficient = SAELENS[architecture]
  extra = {"k": k} if coefficient is None else {coefficient: sparsity_coefficient}
  extra.update(sae_options or {})
  torch.manual_seed(seed)
  cfg = getattr(sae_lens, config_class)(d_in=d, d_sae=n, dtype="float32", device="cpu", **extra)
  sae = getattr(sae_lens, sae_class)(cfg)
  norm_estimate = 100
  if cfg.normalize_activations != "none":
    if norm_batches is None:
      raise ValueError(f"normalize_activations={cfg.normalize_activations!r} needs norm_batches")
    batches = itertools.chain(itertools.islice(norm_batches, norm_estimate), batches)
  provider = (torch.from_numpy(np.asarray(b, np.float32)) for b in batches)
  trainer = sae_lens.SAETrainer(
    cfg=SAETrainerConfig(
      total_training_samples=steps * batch_size,
      train_batch_size_samples=batch_size,
      lr=lr,
      lr_end=lr,
      device="cpu",
      logger=LoggingConfig(log_to_wandb=False),
      n_batches_for_norm_estimate=norm_estimate,
    ),
    sae=sae,
    data_provider=provider,
  )
  start = time.perf_counter()
  trainer.fit()
  wall = time.perf_counter() - start
  folder = pathlib.Path(workdir)
  sae.save_inference_model(folder)
  config, variables = saelens.load(folder)
  return PeerRun(config, variables, wall, sae_lens.__version__)
