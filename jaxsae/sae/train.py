"""SAE training: state creation, the jitted step over every sweep group, and the loop.

`train(config, workdir, source)` validates the config, builds the mesh, estimates the input
scale c (E‖c·x‖² = d) and the decoder-bias init on a sample, resumes from the workdir's newest
intact checkpoint (parameters, optimizer state, dead-latent counters, BatchTopK thresholds, data
position and c), trains with a progress bar, and writes metrics to JSONL and TensorBoard. A
batch whose activations, loss or gradients are not finite stops the run or is skipped
(`train.on_nonfinite`, see jaxsae.nonfinite). On SIGTERM it saves at the next step every process
agrees on and exits with code 143 (jaxsae.preemption).

Fed (input, target) pairs (a `row_sources.PairSource`) it trains transcoders: the same step, sweeps,
checkpoints and resume, with a second scale c_y (E‖c_y·y‖² = d_out) for the targets, b_dec
initialized on the scaled targets (it is the output's bias), and both scales in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsae import nonfinite, run_log, sharding, train_loop
from jaxsae.checkpoint import Checkpointer
from jaxsae.errors import JaxsaeError
from jaxsae.sae import export, normalization, row_sources, train_config
from jaxsae.sae.step import DENSITY_BINS, GroupTrainer, StepSettings
from jaxsae.sae.sweep import Group
from jaxsae.train_state import TrainState


@dataclasses.dataclass
class SAETrainer:
  """Groups, their trainers and the jitted step for one config on one mesh."""

  config: ml_collections.ConfigDict
  mesh: Any
  groups: list[Group]
  trainers: dict[str, GroupTrainer]

  @classmethod
  def build(
    cls, config: ml_collections.ConfigDict, d_in: int, mesh=None, d_out: int | None = None
  ) -> SAETrainer:
    """`d_out`: the width of a transcoder's targets; None trains SAEs."""
    train_config.validate(config, n_devices=jax.device_count(), d_in=d_in, d_out=d_out)
    mesh = mesh or sharding.make_mesh(config.mesh.data, config.mesh.model)
    groups = train_config.plan(config, d_in, d_out)
    trainers = {g.name: GroupTrainer(g, mesh, config.optim, config.train.steps) for g in groups}
    return cls(config, mesh, groups, trainers)

  def settings(self, scale: float, target_scale: float | None = None) -> StepSettings:
    t = self.config.train
    return StepSettings(
      steps=t.steps,
      batch_size=t.batch_size,
      dead_window_tokens=t.dead_window_tokens,
      sparsity_warmup_fraction=t.sparsity_warmup_fraction,
      log_every=t.log_every,
      scale=scale,
      target_scale=target_scale,
    )

  def state_shardings(self) -> TrainState:
    parts = {name: t.shardings() for name, t in self.trainers.items()}
    return TrainState(
      step=sharding.replicated(self.mesh),
      params={name: p[0] for name, p in parts.items()},
      opt_state={name: p[1] for name, p in parts.items()},
      extras={name: p[2] for name, p in parts.items()},
    )

  def abstract_state(self) -> TrainState:
    b_dec = jnp.zeros(self.groups[0].config.d_target)  # The output's width.
    return jax.eval_shape(lambda: self._init(jax.random.key(0), b_dec))

  def _init(self, rng, b_dec, sample=None, target=None) -> TrainState:
    parts = {name: t.init(rng, b_dec, sample, target) for name, t in self.trainers.items()}
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params={name: p[0] for name, p in parts.items()},
      opt_state={name: p[1] for name, p in parts.items()},
      extras={name: p[2] for name, p in parts.items()},
    )

  def init_state(
    self,
    rng: jax.Array,
    b_dec: np.ndarray,
    sample: np.ndarray | None = None,
    target: np.ndarray | None = None,
  ) -> TrainState:
    """A fresh state, created directly in its sharded layout. `sample`: scaled rows the
    encoder's init scale is fitted on (`sae.encoder_init_scale`; None: scale 1), and `target`
    their scaled targets (a transcoder's)."""
    sample, target = (None if a is None else jnp.asarray(a, jnp.float32) for a in (sample, target))
    init = jax.jit(self._init, out_shardings=self.state_shardings())
    return init(rng, jnp.asarray(b_dec), sample, target)

  def make_step(self, scale: float, target_scale: float | None = None):
    """The jitted (state, raw batch) -> (state, {group: metrics}) step. Donates the state.
    A transcoder's batch (`target_scale` given) is a pair (raw inputs, raw targets).

    Members whose batch, loss or gradients are not finite keep their state; metrics "skipped"
    flags them (and "nonfinite_input" a non-finite batch)."""
    settings = self.settings(scale, target_scale)

    def train_step(state: TrainState, batch):
      x_raw_BxD, y = (batch, None) if target_scale is None else batch
      x = x_raw_BxD.astype(jnp.float32) * settings.scale
      step = state.step + 1
      finite_x = jnp.all(jnp.isfinite(x))
      if y is not None:
        y = y.astype(jnp.float32) * target_scale
        finite_x &= jnp.all(jnp.isfinite(y))
      params, opt_state, extras, metrics = {}, {}, {}, {}
      for name, trainer in self.trainers.items():
        old = (state.params[name], state.opt_state[name], state.extras[name])
        *new, metrics[name] = trainer.step(*old, x, step, settings, y)
        # A member whose loss or gradients are not finite keeps its state (nonfinite.py).
        ok = finite_x & jnp.isfinite(metrics[name]["loss/total"])
        ok &= jnp.isfinite(metrics[name]["grad_norm"])
        params[name], opt_state[name], extras[name] = nonfinite.select_finite(ok, tuple(new), old)
        metrics[name]["skipped"] = ~ok
        metrics[name]["nonfinite_input"] = jnp.broadcast_to(~finite_x, ok.shape)
      return TrainState(step, params, opt_state, extras), metrics

    shardings = self.state_shardings()
    return jax.jit(
      train_step,
      in_shardings=(shardings, sharding.batch_sharding(self.mesh)),
      out_shardings=(shardings, sharding.replicated(self.mesh)),
      donate_argnums=0,
    )


# Rows of the init sample the encoder's init scale is fitted on (`sae.encoder_init_scale`):
# the fit is one number per SAE, and each row holds an n-wide pre-activation while it runs.
ENCODER_FIT_ROWS = 1024


class InitialStatistics(NamedTuple):
  """What a fresh run starts from: the scales, b_dec, and scaled rows (and targets) to fit the
  encoder's init scale on. An SAE's targets are its inputs: target_scale and fit_targets None."""

  scale: float
  b_dec: np.ndarray
  fit_rows: np.ndarray
  target_scale: float | None = None
  fit_targets: np.ndarray | None = None


def initial_statistics(
  config: ml_collections.ConfigDict, source: row_sources.ActivationSource
) -> InitialStatistics:
  """Input scale c (E‖c x‖² = d), b_dec init on the scaled outputs (the inputs for an SAE, the
  targets for a transcoder, with their own c_y), and scaled rows to fit the encoder's init
  scale on, from one reproducible sample of the source."""
  index = row_sources.sample_indices(source, config.data.normalization_samples, config.seed)
  sample = source.rows(index)
  scale = normalization.estimate_scale(sample)
  # Strided: the sample's rows are in store order.
  stride = max(1, len(sample) // ENCODER_FIT_ROWS)
  fit_rows = (sample[::stride][:ENCODER_FIT_ROWS] * scale).astype(np.float32)
  stats = InitialStatistics(scale, np.zeros(0), fit_rows)
  outputs, out_scale = sample, scale
  if row_sources.is_paired(source):
    outputs = source.target_rows(index)
    out_scale = normalization.estimate_scale(outputs)
    fit_targets = (outputs[::stride][:ENCODER_FIT_ROWS] * out_scale).astype(np.float32)
    stats = stats._replace(target_scale=out_scale, fit_targets=fit_targets)
  scaled = outputs[: config.data.b_dec_samples] * out_scale
  if config.data.b_dec_init == "geometric_median":
    b_dec = np.asarray(normalization.geometric_median(scaled))
  elif config.data.b_dec_init == "mean":
    b_dec = scaled.mean(0)
  else:
    b_dec = np.zeros(scaled.shape[-1], np.float32)
  return stats._replace(b_dec=b_dec.astype(np.float32))


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  scale: float
  groups: list[Group]
  history: list[dict]  # Train records, as in metrics.jsonl.
  target_scale: float | None = None  # A transcoder's targets' scale; None for SAEs.

  def member_variables(self, group: str, index: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """{"params", "buffers"?} of one SAE (on the scaled-input convention), as numpy arrays."""
    return export.member_variables(self.state.params[group], self.state.extras[group], index)

  def member_params(self, group: str, index: int = 0) -> dict[str, np.ndarray]:
    return self.member_variables(group, index)["params"]


def _metric_records(groups: list[Group], metrics: dict, skipped: dict) -> tuple[dict, dict]:
  """(scalars, histograms) keyed "<member>/<metric>" (bare names for a run of one SAE), with
  each member's count of skipped batches (`skipped`: {label: count}) as "skipped_batches"."""
  single = len(groups) == 1 and groups[0].size == 1
  scalars, histograms = {}, {}
  for group in groups:
    values = metrics[group.name]
    for i, label in enumerate(group.labels):
      prefix = "" if single else f"{label}/"
      for key, array in values.items():
        if key in _STEP_FLAGS:
          continue
        target = histograms if key == "density_histogram" else scalars
        target[prefix + key] = np.asarray(array[i])
      scalars[prefix + "skipped_batches"] = np.asarray(skipped.get(label, 0))
  return scalars, histograms


_STEP_FLAGS = ("skipped", "nonfinite_input")  # Per-step flags read by the loop, not logged.


def _check_same_saes(saved: list | None, current: list, directory) -> None:
  """Refuse to resume SAEs whose settings changed: the checkpoint's parameters would be reported
  under the new settings (a changed λ has the same shapes, so nothing else would notice). Fields
  a checkpoint predates are not compared."""
  if saved is None:
    return
  diffs = []
  if [g["labels"] for g in saved] != [g["labels"] for g in current]:
    diffs.append(f"SAEs {[g['labels'] for g in saved]} → {[g['labels'] for g in current]}")
  else:
    for old, new in zip(saved, current, strict=True):
      for key in sorted(old["config"].keys() & new["config"].keys()):
        if old["config"][key] != new["config"][key]:
          diffs.append(
            f"{old['labels'][0]}: sae.{key} {old['config'][key]!r} → {new['config'][key]!r}"
          )
  if diffs:
    raise JaxsaeError(
      f"the checkpoint in {directory} was trained with other SAE settings ({'; '.join(diffs)}); "
      "resuming would report its SAEs under the new ones. Use a new workdir, or restore the "
      "settings it was trained with"
    )


def train(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  source: Any,
  *,
  stop_at_step: int | None = None,
  mesh=None,
  progress_desc: str = "train sae",
) -> TrainResult:
  """Train (or resume) every SAE `config` describes on `source`, in `workdir`.

  Args:
    config: an SAE config (jaxsae.sae.train_config.base_config).
    workdir: checkpoints, metrics.jsonl, TensorBoard events and config.json go here. If it
      holds a checkpoint, training resumes from it, data position included.
    source: the raw (unscaled) activations: an ActivationSource, an (N, d) array, or a
      sequence of (d,) rows such as a grain MapDataset; or a `row_sources.PairSource` of (input,
      target) rows, which trains transcoders.
    stop_at_step: end this process early at that step (after saving), as a preemption would.
    mesh: a mesh to use instead of the config's.
  """
  sharding.initialize_distributed(config.mesh.distributed)
  source = row_sources.as_source(source)
  paired = row_sources.is_paired(source)
  trainer = SAETrainer.build(config, source.d_in, mesh, source.d_out if paired else None)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

  tc = config.train
  batches = row_sources.train_batches(
    source,
    tc.batch_size,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  checkpointer = Checkpointer.for_run(workdir, tc)
  groups = [
    {"config": g.config.to_dict(), "labels": list(g.labels), "members": len(g.members)}
    for g in trainer.groups
  ]
  if checkpointer.latest_step() is not None:
    target = sharding.with_shardings(trainer.abstract_state(), trainer.state_shardings())
    state, meta = checkpointer.restore(target, batches)
    if "scale" not in meta:
      raise JaxsaeError(f"checkpoint in {checkpointer.directory} has no input scale; retrain")
    _check_same_saes(meta.get("groups"), groups, checkpointer.directory)
    if paired and "target_scale" not in meta:
      raise JaxsaeError(f"checkpoint in {checkpointer.directory} has no target scale; retrain")
    scale = float(meta["scale"])
    target_scale = float(meta["target_scale"]) if paired else None
    skipped = dict(meta.get("skipped_batches", {}))
  else:
    skipped = {}
    init = initial_statistics(config, source)
    scale, target_scale = init.scale, init.target_scale
    state = trainer.init_state(
      jax.random.key(config.seed), init.b_dec, init.fit_rows, init.fit_targets
    )
  meta = {"scale": scale, "d_in": source.d_in, "groups": groups}
  if paired:
    meta.update(target_scale=target_scale, d_out=source.d_out)
  if jax.process_index() == 0:
    (workdir / "saes.json").write_text(json.dumps(meta, indent=2))

  train_step = trainer.make_step(scale, target_scale)
  start = int(jax.device_get(state.step))
  stop = tc.steps if stop_at_step is None else min(stop_at_step, tc.steps)
  history = []
  bin_edges = np.asarray(DENSITY_BINS)
  log = run_log.RunLog(workdir, resume_from=start)

  def next_batch():
    rows = next(batches)
    if not paired:
      return sharding.global_batch({"x": rows}, trainer.mesh)["x"]
    both = sharding.global_batch({"x": rows[0], "y": rows[1]}, trainer.mesh)
    return both["x"], both["y"]

  def check(step, metrics) -> train_loop.NonFinite | None:
    """The members whose activations, loss or gradients were not finite at `step`, if any."""
    flags = jax.device_get({name: m["skipped"] for name, m in metrics.items()})
    bad = [(g, i) for g in trainer.groups for i in range(g.size) if flags[g.name][i]]
    if not bad:
      return None
    values = jax.device_get(metrics)
    where = nonfinite.describe_batch(step, tc.batch_size, "rows")
    last = nonfinite.last_checkpoint(checkpointer.latest_step())
    if values[bad[0][0].name]["nonfinite_input"][0]:
      problems = "NaN or Inf in the activations"
      error = (
        f"NaN or Inf in the activations of {where}, at step {step}; {last}. Fix or drop "
        "those rows at their source, or set train.on_nonfinite='skip' to skip such batches"
      )
    else:
      terms = {
        g.labels[i]: [
          key
          for key, array in values[g.name].items()
          if (key.startswith("loss/") or key == "grad_norm") and not np.isfinite(array[i])
        ]
        for g, i in bad
      }
      problems = "; ".join(f"{label}: {', '.join(t)}" for label, t in terms.items())
      problems = f"non-finite loss terms or gradients ({problems})"
      error = (
        f"{problems} at step {step}, on {where}; {last}. The state from before the step is "
        "kept and nothing after it was saved. Lower optim.lr or check those activations, or "
        "set train.on_nonfinite='skip' to skip such batches"
      )
    labels = [g.labels[i] for g, i in bad]
    warning = (
      f"skipped step {step} ({where}) for {', '.join(labels)}: {problems}; their parameters, "
      "optimizer state and counters are unchanged (train.on_nonfinite='skip')"
    )
    return train_loop.NonFinite(error, warning, tuple(labels))

  def record(step, metrics) -> dict[str, str]:
    scalars, histograms = _metric_records(trainer.groups, jax.device_get(metrics), skipped)
    log.write(step, scalars, split="train")
    for name, counts in histograms.items():
      log.histogram(step, name, bin_edges, counts)
    history.append({"step": step, **{k: float(v) for k, v in scalars.items()}})
    first = trainer.groups[0].labels[0]
    key = "fvu" if "fvu" in scalars else f"{first}/fvu"
    return {"fvu": f"{scalars[key]:.3f}"}

  def metadata(step):
    return {**meta, "tokens": step * tc.batch_size, "skipped_batches": dict(skipped)}

  loop = train_loop.Loop(
    step=train_step,
    next_batch=next_batch,
    record=record,
    log_every=tc.log_every,
    total_steps=tc.steps,
    per_step=tc.batch_size,
    desc=progress_desc,
    check=check,
    on_nonfinite=tc.on_nonfinite,
    skipped=skipped,
    checkpoints=train_loop.Checkpoints(checkpointer, batches, metadata, "SAE training"),
    closing=(log,),
  )
  state = loop.run(state, start, stop)
  return TrainResult(state, scale, trainer.groups, history, target_scale)
