"""Training bridges between two frozen language models: Adam on every term of the bridge loss,
from random or least-squares starting maps."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsae import run_log, train_loop
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer
from jaxsae.sparse.bridges.config import BridgeConfig
from jaxsae.sparse.bridges.losses import losses
from jaxsae.sparse.bridges.weights import Bridges, check_pair, fit_linear, init_bridges
from jaxsae.text import pipeline


@dataclasses.dataclass
class TrainResult:
  bridges: Bridges
  history: list[dict]  # logged training records, as in metrics.jsonl
  seconds: float
  tokens_per_second: float


def make_train_step(dense_config: TransformerConfig, sparse_config: TransformerConfig, optimizer):
  """(bridges, opt_state, dense_params, sparse_params, tokens) -> (bridges, opt_state, terms):
  one optimizer step on the bridges alone (both language models frozen)."""
  loss_fn = functools.partial(
    losses, dense_model=Transformer(dense_config), sparse_model=Transformer(sparse_config)
  )

  def step(bridges, opt_state, dense_params, sparse_params, tokens):
    def total(b):
      terms = loss_fn(b, dense_params, sparse_params, tokens)
      return terms["total"], terms

    (_, terms), grads = jax.value_and_grad(total, has_aux=True)(bridges)
    updates, opt_state = optimizer.update(grads, opt_state, bridges)
    bridges = optax.apply_updates(bridges, updates)
    terms = dict(terms, grad_norm=optax.tree.norm(grads))
    return bridges, opt_state, terms

  return step


def make_bridges(
  config: BridgeConfig, dense_lm, sparse_lm, train_windows: pipeline.PackedWindows
) -> Bridges:
  """Untrained bridges at the config's sites: random, or (init "lstsq") the least-squares linear
  maps on `config.init_windows` windows drawn at random (by the seed) from `train_windows`."""
  check_pair(None, dense_lm, sparse_lm)
  sites = config.resolve_sites(dense_lm.config.n_layers)
  k = config.topk_count(sparse_lm.config)
  bridges = init_bridges(
    dense_lm.config.d_model, sparse_lm.config.d_model, sites, k, jax.random.key(config.seed)
  )
  if config.init == "lstsq":
    rng = np.random.default_rng([config.seed, 1])
    n = min(config.init_windows, len(train_windows))
    chosen = np.sort(rng.choice(len(train_windows), size=n, replace=False))
    bridges = fit_linear(bridges, dense_lm, sparse_lm, np.stack([train_windows[i] for i in chosen]))
  return bridges


def train_bridges(
  config: BridgeConfig,
  dense_lm,
  sparse_lm,
  train_windows: pipeline.PackedWindows,
  *,
  workdir: str | pathlib.Path | None = None,
  bridges: Bridges | None = None,
) -> TrainResult:
  """Train bridges between two frozen models on shuffled windows (Adam, constant lr), with a
  progress bar in tokens/s; with `workdir`, log records to metrics.jsonl and TensorBoard.
  `bridges` None starts from `make_bridges`; given bridges keep their own sites and k. No
  checkpoints: a run is minutes."""
  check_pair(bridges, dense_lm, sparse_lm)
  if bridges is None:
    bridges = make_bridges(config, dense_lm, sparse_lm, train_windows)
  batches = pipeline.train_batches(train_windows, config.batch_size, seed=config.seed)
  optimizer = optax.adam(config.lr)
  opt_state = optimizer.init(bridges)
  step_fn = jax.jit(make_train_step(dense_lm.config, sparse_lm.config, optimizer))
  tokens_per_step = config.batch_size * train_windows.seq_len
  log = run_log.RunLog(workdir) if workdir is not None else None
  history, start, first_done = [], time.time(), None

  def step(state, tokens):
    bridges, opt_state, terms = step_fn(*state, dense_lm.params, sparse_lm.params, tokens)
    return (bridges, opt_state), terms

  def time_first_step(step, state, terms):
    nonlocal first_done
    if step == 1:  # Throughput excludes compilation.
      jax.block_until_ready(terms)
      first_done = time.time()

  def record(step, terms) -> dict[str, str]:
    values = {k: float(v) for k, v in jax.device_get(terms).items()}
    history.append({"step": step, **values})
    if log is not None:
      log.write(step, values, split="train")
    return {"total": f"{values['total']:.3f}"}

  loop = train_loop.Loop(
    step=step,
    next_batch=lambda: jnp.asarray(next(batches)["tokens"]),
    record=record,
    log_every=config.log_every,
    total_steps=config.steps,
    per_step=tokens_per_step,
    desc="bridges",
    after_dispatch=time_first_step,
    log_first_step=True,
    closing=(log,) if log is not None else (),
  )  # No non-finite check and no checkpoints: a run is minutes.
  bridges, _ = loop.run((bridges, opt_state), 0, config.steps)
  jax.block_until_ready(bridges)
  end = time.time()
  timed_steps = config.steps - 1
  rate = timed_steps * tokens_per_step / max(end - first_done, 1e-9) if timed_steps else 0.0
  return TrainResult(bridges, history, end - start, rate)
