"""Our real SAE training step, timed: the jitted step `jaxsae.sae.train` runs, on random inputs.

The trainer is `SAETrainer.build` on a one-SAE config (`base_config(architecture)`: the
architecture's recipe, AuxK and all) and the step is its `make_step`: the same sweep group,
`GroupTrainer`, shardings and state donation as in training, on the default (data, model) mesh
over all devices. Inputs are standard normal rows of width d (E‖x‖² = d, the scale the trainer
normalizes to, so the input scale is 1). A timed step is one whole optimizer update: forward,
backward, Adam, constraints, dead-latent counters and metrics.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import ml_collections
import numpy as np

from jaxsae import sharding
from jaxsae.bench import timing
from jaxsae.sae import train_config
from jaxsae.sae.train import SAETrainer

# Architectures whose config's k is the number of active latents.
K_ARCHITECTURES = ("topk", "batchtopk")


@dataclasses.dataclass(frozen=True)
class StepResult(timing.StepTiming):
  """losses: loss/total after the warm-up step and after the last timed step."""

  devices: int


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
  """ "topk:topk_path=dense+compute_dtype=bfloat16" -> ("topk", {"topk_path": "dense", ...}).

  Keys are `sae.*` fields, `dead_window_tokens` (e.g. the batch size, so that latents silent
  in one step count as dead and AuxK runs), or `transcode=True` (a transcoder: random targets of
  the input's width). `layers=L` makes a cross-layer transcoder over L sites of width d each
  (inputs and targets L·d wide; `shape` gives the widths)."""
  architecture, _, rest = spec.partition(":")
  overrides = {}
  for item in filter(None, rest.split("+")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"benchmark variant {spec!r}: {item!r} is not key=value")
    overrides[key] = value
  return architecture, overrides


@dataclasses.dataclass(frozen=True)
class Shape:
  """The widths a spec trains at: inputs d_in, targets d_out (None: an SAE), over `layers`."""

  d_in: int
  d_out: int | None
  layers: int

  @property
  def transcoder(self) -> bool:
    return self.d_out is not None


def shape(d: int, overrides: dict[str, str] | None) -> Shape:
  """The widths of a spec's step at site width d (see `parse_spec`)."""
  overrides = overrides or {}
  layers = int(overrides.get("layers", 1))
  transcode = _typed(False, overrides.get("transcode", "false")) or layers > 1
  return Shape(d * layers, d * layers if transcode else None, layers)


def _typed(old, value: str):
  if isinstance(old, bool):
    return value.lower() in ("1", "true", "yes")
  return type(old)(value)


def bench_config(
  architecture: str,
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  steps: int = 10_000,
  overrides: dict[str, str] | None = None,
) -> ml_collections.ConfigDict:
  """A validated one-SAE config of `architecture` at this shape (steps only set the schedule),
  with `overrides` (see `parse_spec`) applied."""
  config = train_config.base_config(architecture)
  config.sae.n_latents = n
  config.sae.k = k if architecture in K_ARCHITECTURES else min(config.sae.k, n)
  config.train.batch_size = batch
  config.train.steps = steps
  widths = shape(d, overrides)
  for key, value in (overrides or {}).items():
    if key == "dead_window_tokens":
      config.train.dead_window_tokens = int(value)
    elif key == "transcode":
      continue  # `shape` reads it.
    elif key in config.sae:
      config.sae[key] = _typed(config.sae[key], value)
    else:
      raise ValueError(
        f"unknown benchmark override {key!r}: use sae.* fields or dead_window_tokens"
      )
  train_config.validate(config, n_devices=jax.device_count(), d_in=widths.d_in, d_out=widths.d_out)
  return config


def random_batch(trainer: SAETrainer, d: int, batch: int, seed: int = 0, d_out=None):
  """Standard normal (batch, d) float32 rows, placed as the trainer places a global batch; with
  `d_out`, a pair (inputs, targets of width d_out)."""
  rng = np.random.default_rng(seed)
  rows = {"x": rng.standard_normal((batch, d), dtype=np.float32)}
  if d_out is not None:
    rows["y"] = rng.standard_normal((batch, d_out), dtype=np.float32)
  placed = sharding.global_batch(rows, trainer.mesh)
  return placed["x"] if d_out is None else (placed["x"], placed["y"])


def time_train_step(
  architecture: str,
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  repeats: int = 5,
  seed: int = 0,
  mesh=None,
  overrides: dict[str, str] | None = None,
) -> StepResult:
  """Median seconds of one training step (after one compiling step) and the losses seen."""
  config = bench_config(architecture, d=d, n=n, k=k, batch=batch, overrides=overrides)
  widths = shape(d, overrides)
  trainer = SAETrainer.build(config, widths.d_in, mesh, d_out=widths.d_out)
  step = trainer.make_step(scale=1.0, target_scale=1.0 if widths.transcoder else None)
  x = random_batch(trainer, widths.d_in, batch, seed, widths.d_out)
  b_dec = np.zeros(widths.d_out or widths.d_in, np.float32)
  state = trainer.init_state(jax.random.key(seed), b_dec)
  group = trainer.groups[0].name
  held = {"state": state, "metrics": None}

  def run():
    held["state"], held["metrics"] = step(held["state"], x)  # The old state is donated.
    return held["state"], held["metrics"]

  def loss() -> float:
    return float(jax.device_get(held["metrics"][group]["loss/total"])[0])

  jax.block_until_ready(run())  # Compiles.
  losses = [loss()]
  measured = timing.time_calls(run, repeats, warmup=0)
  losses.append(loss())
  if not all(math.isfinite(v) for v in losses):
    raise FloatingPointError(f"{architecture}: non-finite training loss {losses}")
  return StepResult(measured, batch, tuple(losses), trainer.mesh.size)
