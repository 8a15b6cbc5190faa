"""Language-model training: a jitted, sharded train step and the loop around it.

`train_and_evaluate(config, workdir)` validates the config, builds the mesh, data, model and
optimizer, resumes from the workdir's newest intact checkpoint (state and data position),
trains with a progress bar, evaluates on the validation split, logs to JSONL and TensorBoard,
and saves checkpoints asynchronously. A batch whose loss or gradients are not finite stops the
run or is skipped (`train.on_nonfinite`, see jaxsae.nonfinite). On SIGTERM it saves at the next
step every process agrees on and exits with code 143 (jaxsae.preemption).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsae import nonfinite, run_log, sharding, train_loop
from jaxsae.checkpoint import Checkpointer
from jaxsae.lm import config as lm_config
from jaxsae.lm import evaluate as eval_lib
from jaxsae.lm import loss as loss_lib
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer
from jaxsae.sparse import optim as sparse_optim
from jaxsae.sparse import sparsity_stats
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline
from jaxsae.text.tokenizer import Tokenizer, load_tokenizer
from jaxsae.train_state import TrainState


def learning_rate_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine decay to `lr * final_lr_fraction` at `total_steps`."""
  warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=optim.lr,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=optim.lr * optim.final_lr_fraction,
  )


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int, sparsity=None):
  """AdamW (decay on matrices only) after global-norm clipping; with `sparsity` (an LM config's
  `sparsity` section, enabled) the weight-sparse optimizer of `jaxsae.sparse.optim` instead."""
  if sparsity is not None and sparsity.enabled:
    return sparse_optim.make_optimizer(
      lm_config.sparsity_config(sparsity),
      total_steps,
      base_lr=optim.lr,
      weight_decay=optim.weight_decay,
      warmup=sparsity.warmup,
    )

  def decay_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)

  adamw = optax.adamw(
    learning_rate_schedule(optim, total_steps),
    b1=optim.b1,
    b2=optim.b2,
    eps=optim.eps,
    weight_decay=optim.weight_decay,
    mask=decay_mask,
  )
  if optim.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim.clip_norm), adamw)
  return adamw


def make_train_step(model: Transformer, optimizer):
  """(state, batch) -> (state, metrics): one AdamW step on mean next-token cross-entropy.

  A step whose loss or gradients are not finite keeps the parameters and optimizer state
  (metrics["skipped"] is 1); the step counter still advances."""

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    tokens_BxT1 = batch["tokens"]

    def loss_fn(params):
      logits = model.apply({"params": params}, tokens_BxT1[:, :-1])
      return loss_lib.mean_loss(logits, tokens_BxT1[:, 1:], batch["weights"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    sparse = isinstance(optimizer, sparse_optim.SparseOptimizer)
    if sparse:
      params, opt_state = optimizer.sparse_step_update(
        state.params, grads, state.opt_state, state.step
      )
      updates = jax.tree.map(jnp.subtract, params, state.params)
    else:
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    params, opt_state = nonfinite.select_finite(
      ok, (params, opt_state), (state.params, state.opt_state)
    )
    metrics = {
      "loss": loss,
      "grad_norm": grad_norm,
      "update_norm": optax.tree.norm(updates),
      "param_norm": optax.tree.norm(params),
      "skipped": (~ok).astype(jnp.float32),
    }
    if sparse:  # Nonzeros per matrix and overall, dead neurons (Gao et al. 2025).
      metrics.update(sparsity_stats.nonzero_stats(params))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def state_shardings(model: Transformer, optimizer, mesh) -> tuple[Any, Any]:
  """(abstract state, shardings): params and Adam moments placed by their logical axes."""

  def create_boxed():
    tokens = jnp.zeros((1, min(8, model.config.max_len)), jnp.int32)
    return TrainState.create(model.init(jax.random.key(0), tokens)["params"], optimizer)

  boxed = jax.eval_shape(create_boxed)
  shardings = sharding.logical_shardings(boxed, mesh)
  return nn.meta.unbox(boxed), shardings


def create_state(model: Transformer, optimizer, rng: jax.Array, shardings: Any) -> TrainState:
  """A fresh train state, created directly in its sharded layout."""

  def create(rng):
    tokens = jnp.zeros((1, min(8, model.config.max_len)), jnp.int32)
    params = nn.meta.unbox(model.init(rng, tokens)["params"])
    return TrainState.create(params, optimizer)

  return jax.jit(create, out_shardings=shardings)(rng)


@dataclasses.dataclass
class LMRun:
  """Everything a training run is built from, before any step is taken."""

  config: ml_collections.ConfigDict
  mesh: Any
  tokenizer: Tokenizer
  model: Transformer
  train: pipeline.SplitData
  validation: pipeline.SplitData

  @property
  def model_config(self) -> TransformerConfig:
    return self.model.config


def build(config: ml_collections.ConfigDict) -> LMRun:
  """Validate `config` and load what it names: mesh, tokenizer, corpus splits, model."""
  sharding.initialize_distributed(config.mesh.distributed)
  lm_config.validate(config, n_devices=jax.device_count())
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  tokenizer = load_tokenizer(config.data.tokenizer)
  corpus = corpus_lib.from_config(config.data)
  seq_len = config.data.seq_len
  model = Transformer(lm_config.model_config(config, tokenizer.vocab_size))
  vocab = model.config.vocab_size  # Pre-tokenized ids are checked against it.
  train = pipeline.load_split(corpus, "train", tokenizer, seq_len, vocab)
  validation = pipeline.load_split(corpus, "validation", tokenizer, seq_len, vocab)
  return LMRun(config, mesh, tokenizer, model, train, validation)


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  history: list[dict]  # train records, as in metrics.jsonl
  evals: list[dict]  # validation records
  model_config: TransformerConfig


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  *,
  stop_at_step: int | None = None,
) -> TrainResult:
  """Train (or resume) the language model described by `config` in `workdir`.

  Args:
    config: an LM config (see jaxsae.lm.config.base_config).
    workdir: where checkpoints, metrics.jsonl, TensorBoard events and config.json go. If it
      holds a checkpoint, training resumes from it, data position included.
    stop_at_step: end this process early at that step (after saving), as a preemption would;
      the schedule still follows `config.train.steps`.
  """
  run = build(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    (workdir / "model.json").write_text(json.dumps(run.model_config.to_dict(), indent=2))

  tc, mesh = config.train, run.mesh
  optimizer = make_optimizer(config.optim, tc.steps, config.sparsity)
  abstract_state, shardings = state_shardings(run.model, optimizer, mesh)
  train_iter = pipeline.train_batches(
    run.train.windows,
    tc.batch_size,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  checkpointer = Checkpointer.for_run(workdir, tc)
  # Batches skipped for non-finite loss or gradients (train.on_nonfinite="skip"), keyed by the
  # name it is logged and saved under.
  skipped = {"skipped_batches": 0}
  if checkpointer.latest_step() is not None:
    target = sharding.with_shardings(abstract_state, shardings)
    state, meta = checkpointer.restore(target, train_iter)
    skipped["skipped_batches"] = int(meta.get("skipped_batches", 0))
  else:
    state = create_state(run.model, optimizer, jax.random.key(config.seed), shardings)

  batch_sh = sharding.batch_sharding(mesh)
  train_step = jax.jit(
    make_train_step(run.model, optimizer),
    in_shardings=(shardings, batch_sh),
    out_shardings=(shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )
  eval_step = jax.jit(
    eval_lib.make_eval_step(run.model, run.tokenizer.token_byte_lengths()),
    in_shardings=(shardings.params, batch_sh),
  )
  if isinstance(optimizer, sparse_optim.SparseOptimizer):
    schedule = optimizer.learning_rate
  else:
    schedule = learning_rate_schedule(config.optim, tc.steps)

  start = int(jax.device_get(state.step))
  stop = tc.steps if stop_at_step is None else min(stop_at_step, tc.steps)
  tokens_per_step = tc.batch_size * config.data.seq_len
  history, evals = [], []
  log = run_log.RunLog(workdir, resume_from=start)

  def validate(step, state, metrics):
    """At the eval cadence and the run's last step (before that step's train record)."""
    if (tc.eval_every and step % tc.eval_every == 0) or step == tc.steps:
      result = eval_lib.evaluate(
        eval_step, state.params, run.validation.windows, tc.batch_size, mesh, tc.eval_sequences
      )
      log.write(step, result.as_dict(), split="validation")
      evals.append({"step": step, **result.as_dict()})

  def check(step, metrics) -> train_loop.NonFinite | None:
    if not jax.device_get(metrics["skipped"]):
      return None
    values = jax.device_get(metrics)
    where = nonfinite.describe_batch(step, tc.batch_size, "tokens", config.data.seq_len)
    terms = ", ".join(k for k in ("loss", "grad_norm") if not math.isfinite(float(values[k])))
    return train_loop.NonFinite(
      error=f"non-finite {terms} at step {step}, on {where}; "
      f"{nonfinite.last_checkpoint(checkpointer.latest_step())}. The state from before "
      "the step is kept and nothing after it was saved. Lower optim.lr (or raise "
      "optim.warmup_steps), or set train.on_nonfinite='skip' to skip such batches",
      warning=f"skipped step {step} ({where}): non-finite {terms}; parameters and optimizer "
      "state are unchanged (train.on_nonfinite='skip')",
      skipped=("skipped_batches",),
    )

  def record(step, metrics) -> dict[str, str]:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    del values["skipped"]  # A flag for `check`, counted in skipped_batches.
    values["lr"] = float(schedule(step - 1))
    values.update(skipped)
    log.write(step, values, split="train")
    history.append({"step": step, **values})
    return {"loss": f"{values['loss']:.3f}"}

  loop = train_loop.Loop(
    step=train_step,
    next_batch=lambda: sharding.global_batch(next(train_iter), mesh),
    record=record,
    log_every=tc.log_every,
    total_steps=tc.steps,
    per_step=tokens_per_step,
    check=check,
    on_nonfinite=tc.on_nonfinite,
    skipped=skipped,
    checkpoints=train_loop.Checkpoints(
      checkpointer,
      train_iter,
      lambda step: {"tokens": step * tokens_per_step, **skipped},
      "LM training",
    ),
    after_dispatch=validate,
    closing=(log,),
  )
  state = loop.run(state, start, stop)
  return TrainResult(state, history, evals, run.model_config)
