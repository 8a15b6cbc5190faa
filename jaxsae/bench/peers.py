"""The peers (the `peers` extra: sae-lens, eai-sparsify, CPU torch) training the same SAE, timed
in-process.

The peer step is SAELens's own: `SAETrainer.step(batch)` on its training SAE (forward,
dead-latent bookkeeping, backward, grad-norm clip at 1, Adam, scheduler steps), then
`n_training_steps += 1` as `SAETrainer.fit` does. SAELens defaults otherwise: TopK scales
pre-activations by ‖W_dec‖ (`rescale_acts_by_decoder_norm`) and skips AuxK until a latent has
been dead for 1000 steps; ReLU is `standard` (‖W_dec‖-weighted L1). Learning rate and Adam betas
are jaxsae's. torch runs on the CPU with one thread per usable core.

The sparsify step is its trainer's per step (`sparsify.trainer.Trainer.fit`, one SAE, no
gradient accumulation): decoder rows set to unit norm, `SparseCoder(x)` (its fused encoder with
the sparse backward over the k chosen latents, its embedding-bag decoder), FVU backward, the
gradient parallel to the decoder rows removed, Adam at jaxsae's learning rate (sparsify's own
default is signum; Adam is the like-for-like optimizer), and its tokens-since-fired counters.
AuxK off, as no latent is dead in a few steps (its dead threshold is 10M tokens).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util

from jaxsae.bench import machine, timing
from jaxsae.sae import optim

# jaxsae architecture -> (SAELens training class, its config class, whether it takes k).
CLASSES = {
  "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig", True),
  "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", True),
  "relu": ("StandardTrainingSAE", "StandardTrainingSAEConfig", False),
  "gated": ("GatedTrainingSAE", "GatedTrainingSAEConfig", False),
  "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig", False),
}


def _missing(*modules: str) -> str | None:
  absent = [m for m in modules if importlib.util.find_spec(m) is None]
  return f"{' and '.join(absent)} not installed (pip install -e '.[peers]')" if absent else None


@contextlib.contextmanager
def _torch_threads(threads: int | None):
  """torch's intra-op threads set to `threads` (default: one per usable core) for the block,
  then restored; yields the count."""
  import torch

  threads = threads or machine.usable_cpus()
  previous = torch.get_num_threads()
  torch.set_num_threads(threads)
  try:
    yield threads
  finally:
    torch.set_num_threads(previous)


def sparsify_unavailable_reason(architecture: str) -> str | None:
  """Why sparsify cannot be timed on `architecture` here, or None when it can."""
  missing = _missing("torch", "sparsify")
  if missing:
    return missing
  if architecture != "topk":
    return f"sparsify trains TopK only, not {architecture}"
  return None


def unavailable_reason(architecture: str) -> str | None:
  """Why SAELens cannot be timed on `architecture` here, or None when it can."""
  missing = _missing("torch", "sae_lens")
  if missing:
    return missing
  if architecture not in CLASSES:
    return f"SAELens has no {architecture} training SAE"
  return None


@dataclasses.dataclass(frozen=True)
class PeerResult(timing.StepTiming):
  """losses: after each step (warm-up included)."""

  version: str
  threads: int


def time_saelens_step(
  architecture: str,
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  repeats: int = 5,
  seed: int = 0,
  threads: int | None = None,
) -> PeerResult:
  """Median seconds of one SAELens training step (after one warm-up step) on random rows."""
  reason = unavailable_reason(architecture)
  if reason:
    raise RuntimeError(reason)
  import sae_lens
  import torch
  from sae_lens.config import LoggingConfig, SAETrainerConfig

  sae_name, config_name, takes_k = CLASSES[architecture]
  with _torch_threads(threads) as threads:
    torch.manual_seed(seed)
    extra = {"k": k} if takes_k else {}
    cfg = getattr(sae_lens, config_name)(d_in=d, d_sae=n, dtype="float32", device="cpu", **extra)
    sae = getattr(sae_lens, sae_name)(cfg)
    trainer = sae_lens.SAETrainer(
      cfg=SAETrainerConfig(
        total_training_samples=batch * 10_000,
        train_batch_size_samples=batch,
        lr=optim.default_learning_rate(n),
        lr_end=optim.default_learning_rate(n),
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
      ),
      sae=sae,
      data_provider=iter(()),
    )
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(seed))
    losses = []

    def run():
      out = trainer.step(x)
      trainer.n_training_steps += 1
      losses.append(float(out.loss.detach()))

    measured = timing.time_calls(run, repeats)
  return PeerResult(measured, batch, tuple(losses), sae_lens.__version__, threads)


def time_sparsify_step(
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  repeats: int = 5,
  seed: int = 0,
  threads: int | None = None,
  transcode: bool = False,
) -> PeerResult:
  """Median seconds of one sparsify TopK training step (after one warm-up step) on random
  rows; `losses` are its FVUs. `transcode`: its transcoder (random targets of width d, no
  centering of the input), fed (x, y) pairs."""
  reason = sparsify_unavailable_reason("topk")
  if reason:
    raise RuntimeError(reason)
  import sparsify
  import torch
  from sparsify.config import SparseCoderConfig
  from sparsify.sparse_coder import SparseCoder

  with _torch_threads(threads) as threads:
    torch.manual_seed(seed)
    cfg = SparseCoderConfig(num_latents=n, k=k, transcode=transcode)
    sae = SparseCoder(d, cfg, "cpu", dtype=torch.float32)
    adam = torch.optim.Adam(sae.parameters(), lr=optim.default_learning_rate(n))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, generator=generator)
    y = torch.randn(batch, d, generator=generator) if transcode else None
    sae.b_dec.data = (x if y is None else y).mean(0)  # As its trainer does on the first batch.
    since_fired = torch.zeros(n, dtype=torch.long)
    losses = []

    def run():
      with torch.no_grad():
        sae.set_decoder_norm_to_unit_norm()
      out = sae(x, y, dead_mask=None)
      (out.fvu + out.multi_topk_fvu / 8).backward()
      sae.remove_gradient_parallel_to_decoder_directions()
      adam.step()
      adam.zero_grad()
      with torch.no_grad():
        fired = torch.zeros(n, dtype=torch.bool)
        fired[out.latent_indices.flatten()] = True
        since_fired.add_(batch)
        since_fired[fired] = 0
      losses.append(float(out.fvu.detach()))

    measured = timing.time_calls(run, repeats)
  version = getattr(sparsify, "__version__", None) or importlib.metadata.version("eai-sparsify")
  return PeerResult(measured, batch, tuple(losses), version, threads)
