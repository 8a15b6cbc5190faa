"""The weight-sparse LM train step against its dense twin: ms per step and where the time goes.

Both come from one LM config pair (experiments/configs/lm_sparse.py "sparse" and "dense": the
same shape; the sparse one adds AbsTopK activation sparsity at eight sites per block, the
paper's optimizer and the top-k weight projection) and take the same batch. Each variant is
timed as its whole jitted train step (`jaxsae.lm.train.make_train_step`) and in parts: forward,
forward+backward, the optimizer update (sparse: normalized Adam, projection, decay) and the
projection alone. The difference of the two forward+backward times is what activation sparsity
costs (the models differ in nothing else). The step counter is set to `step_fraction` of
training (default 3/4, past annealing): there the projection runs at its target k every step,
while before annealing starts it is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsae.bench.paired import time_round_robin
from jaxsae.lm import config as lm_config
from jaxsae.lm import loss as loss_lib
from jaxsae.lm import train as lm_train
from jaxsae.models.transformer import Transformer
from jaxsae.sparse import optim as sparse_optim
from jaxsae.sparse import projection
from jaxsae.text.tokenizer import load_tokenizer
from jaxsae.train_state import TrainState

TARGET_RATIO = 1.3  # Sparse step at most 1.3x its dense twin's (issue 7).
PARTS = ("step", "forward", "forward_backward", "update", "projection")


def model_of(config: ml_collections.ConfigDict) -> Transformer:
  vocab = load_tokenizer(config.data.tokenizer).vocab_size
  return Transformer(lm_config.model_config(config, vocab))


def _calls(config, params, batch, step_fraction: float) -> dict[str, Any]:
  """{part: zero-argument jitted call} for one variant."""
  model = model_of(config)
  optimizer = lm_train.make_optimizer(config.optim, config.train.steps, config.sparsity)
  step = jnp.asarray(int(step_fraction * config.train.steps), jnp.int32)
  state = TrainState.create(params, optimizer).replace(step=step)
  tokens, weights = batch["tokens"], batch["weights"]

  def loss_fn(p):
    logits = model.apply({"params": p}, tokens[:, :-1])
    return loss_lib.mean_loss(logits, tokens[:, 1:], weights)

  forward = jax.jit(loss_fn)
  forward_backward = jax.jit(jax.value_and_grad(loss_fn))
  _, grads = forward_backward(params)
  sparse = isinstance(optimizer, sparse_optim.SparseOptimizer)
  if sparse:
    update = jax.jit(optimizer.sparse_step_update)
    project = jax.jit(lambda p, s: projection.project(p, optimizer.fractions(s), optimizer.config))
  else:

    def dense_update(p, g, o):
      updates, o = optimizer.update(g, o, p)
      return optax.apply_updates(p, updates), o

    update = jax.jit(dense_update)
  train_step = jax.jit(lm_train.make_train_step(model, optimizer))
  calls = {
    "step": lambda: train_step(state, batch),
    "forward": lambda: forward(params),
    "forward_backward": lambda: forward_backward(params),
  }
  if sparse:
    calls["update"] = lambda: update(params, grads, state.opt_state, step)
    calls["projection"] = lambda: project(params, step)
  else:
    calls["update"] = lambda: update(params, grads, state.opt_state)
  return calls


def init_params(config: ml_collections.ConfigDict, seed: int = 0) -> Any:
  """Random float32 parameters of the config's model."""
  model = model_of(config)
  tokens = jnp.zeros((1, min(8, model.config.max_len)), jnp.int32)
  return nn.meta.unbox(model.init(jax.random.key(seed), tokens)["params"])


def compare(
  configs: Mapping[str, ml_collections.ConfigDict],
  tokens_BxT1: np.ndarray,
  *,
  params: Mapping[str, Any] | None = None,
  step_fraction: float = 0.75,
  repeats: int = 5,
  warmup: int = 1,
) -> dict[str, Any]:
  """Time every variant of `configs` ({"sparse": ..., "dense": ...}) on one batch.

  tokens_BxT1: (batch, seq_len + 1) int32. params: {variant: parameters} to start from (e.g. a
  trained model's, for realistic activations); a variant without them starts from random init.
  Returns {"rows": one per variant, "summary": ratios}; times in ms (wall-clock medians, with
  process-CPU medians beside them), all parts timed round robin.
  """
  tokens = jnp.asarray(tokens_BxT1, jnp.int32)
  batch = {"tokens": tokens, "weights": jnp.ones(tokens.shape[0], jnp.float32)}
  params = dict(params or {})
  calls, init = {}, {}
  for name, config in configs.items():
    init[name] = "given" if params.get(name) is not None else "random"
    p = params.get(name)
    p = init_params(config, config.seed) if p is None else p
    for part, call in _calls(config, p, batch, step_fraction).items():
      calls[(name, part)] = call
  flat = {f"{name}/{part}": call for (name, part), call in calls.items()}
  timings = time_round_robin(flat, repeats=repeats, warmup=warmup)
  n_tokens = int(tokens.shape[0] * (tokens.shape[1] - 1))
  rows = []
  for name, config in configs.items():
    row: dict[str, Any] = {
      "variant": name,
      "weight_sparse": bool(config.sparsity.enabled),
      "activation_topk_fraction": float(config.model.activation_topk_fraction),
      "params": init[name],
      "batch": int(tokens.shape[0]),
      "seq_len": int(tokens.shape[1] - 1),
    }
    for part in PARTS:
      timing = timings.get(f"{name}/{part}")
      row[f"{part}_ms"] = None if timing is None else 1e3 * timing[0].seconds
      row[f"{part}_cpu_ms"] = None if timing is None else 1e3 * timing[1].seconds
    row["backward_ms"] = row["forward_backward_ms"] - row["forward_ms"]
    row["other_ms"] = row["step_ms"] - row["forward_backward_ms"] - row["update_ms"]
    row["tokens_per_s"] = n_tokens / (row["step_ms"] / 1e3)
    row["spread"] = timings[f"{name}/step"][0].spread
    rows.append(row)
  return {"rows": rows, "summary": summarize(rows), "step_fraction": step_fraction}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Sparse/dense ratios of the step and its parts (first weight-sparse row over first dense)."""
  sparse = next((r for r in rows if r["weight_sparse"]), None)
  dense = next((r for r in rows if not r["weight_sparse"]), None)
  if sparse is None or dense is None:
    return {}
  ratio = sparse["step_ms"] / dense["step_ms"]
  return {
    "sparse": sparse["variant"],
    "dense": dense["variant"],
    "step_ratio": ratio,
    "step_cpu_ratio": sparse["step_cpu_ms"] / dense["step_cpu_ms"],
    "forward_ratio": sparse["forward_ms"] / dense["forward_ms"],
    "forward_backward_ratio": sparse["forward_backward_ms"] / dense["forward_backward_ms"],
    "update_ratio": sparse["update_ms"] / dense["update_ms"],
    "activation_sparsity_ms": sparse["forward_backward_ms"] - dense["forward_backward_ms"],
    "extra_update_ms": sparse["update_ms"] - dense["update_ms"],
    "target_ratio": TARGET_RATIO,
    "target_met": ratio <= TARGET_RATIO,
  }
