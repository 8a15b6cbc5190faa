"""Pruning a model to the smallest circuit that still does a task (Gao et al. 2025, §pruning).

Every node (`jaxsae.sparse.nodes`) gets a mask m_i = H(tau_i): the Heaviside step forward and the
derivative of a sigmoid backward (a straight-through surrogate), tau clamped to [-1, 1] and
initialised at `init` (all nodes on). Masked nodes are mean-ablated. The mask logits minimise

    L(tau) = L_task(masked model) + c * sum_i m_i                                 (paper, §pruning)

with L_task the two-token binary loss of `jaxsae.sparse.tasks` on batches of contrast pairs,
by AdamW. Then discretize: sort nodes by tau and bisect on the number kept for the smallest
circuit whose task loss over the training pairs is at most `target_loss`. The paper's optional
calibration of a scale and shift of the final logits is not applied.

Reported beside the circuit (on held-out pairs): sufficiency — the circuit alone, every other
node mean-ablated — and necessity — the circuit's nodes mean-ablated, everything else intact;
the unpruned model and the fully ablated model (every node at its mean) bound both.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models.transformer import Transformer, run
from jaxsae.sparse import nodes as nodes_lib
from jaxsae.sparse.edges import count_edges
from jaxsae.sparse.pruned_circuit import Circuit
from jaxsae.sparse.tasks import PairBatch, Task, binary_loss, last_logits, padded_batches


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """steps x batch_pairs contrast pairs of AdamW(lr, weight_decay) on the mask logits; `penalty`
  is c; `temperature` scales the sigmoid surrogate (dm/dtau = sigmoid'(tau/T)/T)."""

  steps: int = 400
  batch_pairs: int = 16
  lr: float = 3e-3
  weight_decay: float = 0.0
  penalty: float = 1e-4
  init: float = 0.1
  temperature: float = 1.0
  target_loss: float = 0.15
  freeze_norm: bool = False
  eval_batch: int = 64
  seed: int = 0

  def __post_init__(self):
    problems = []
    for name in ("steps", "batch_pairs", "eval_batch"):
      if getattr(self, name) < 1:
        problems.append(f"{name}={getattr(self, name)} must be at least 1")
    for name in ("lr", "temperature", "target_loss"):
      if not getattr(self, name) > 0:
        problems.append(f"{name}={getattr(self, name)} must be positive")
    if self.penalty < 0 or self.weight_decay < 0:
      problems.append("penalty and weight_decay must be >= 0")
    if not -1 <= self.init <= 1:
      problems.append(f"init={self.init} must be in [-1, 1] (tau is clamped there)")
    if problems:
      raise ConfigError([f"prune.{p}" for p in problems])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def heaviside(tau: jax.Array, temperature: float = 1.0) -> jax.Array:
  """m = H(tau) = 1[tau > 0] forward; sigmoid'(tau / T) / T backward."""
  return (tau > 0).astype(jnp.float32)


def _heaviside_fwd(tau, temperature):
  return heaviside(tau, temperature), tau


def _heaviside_bwd(temperature, tau, g):
  s = jax.nn.sigmoid(tau / temperature)
  return (g * s * (1 - s) / temperature,)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)


def _pair_tokens(batch: PairBatch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A prompts then B prompts of the chosen pairs: (2n, T) tokens and (2n,) last indices."""
  return (
    np.concatenate([batch.tokens_a[rows], batch.tokens_b[rows]]),
    np.concatenate([batch.last_a[rows], batch.last_b[rows]]),
  )


class Pruner:
  """Masked forward passes of one model on one task's prompts.

  means: {site: (width,)} node means over the pretraining distribution (`nodes.node_means`).
  """

  def __init__(self, lm, means: Mapping[str, np.ndarray], config: PruneConfig = PruneConfig()):
    self.lm, self.config = lm, config
    self.sites = nodes_lib.node_sites(lm.config)
    nodes_lib.check_masks(lm.config, means)
    missing = [s for s in self.sites if s not in means]
    if missing:
      raise JaxsaeError(
        f"node means are missing for {missing[:3]}{'...' if len(missing) > 3 else ''}; compute "
        "them with jaxsae.sparse.nodes.node_means(lm, windows)"
      )
    self.means = {s: jnp.asarray(means[s], jnp.float32) for s in self.sites}
    self.widths = [nodes_lib.site_width(lm.config, s) for s in self.sites]
    self.n_nodes = sum(self.widths)
    self.module = Transformer(lm.config)

  # ---- flat node vectors <-> per-site dicts

  def split(self, flat: jax.Array) -> dict[str, jax.Array]:
    offsets = np.cumsum([0] + self.widths)
    return {s: flat[offsets[i] : offsets[i + 1]] for i, s in enumerate(self.sites)}

  def join(self, per_site: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(per_site[s]) for s in self.sites])

  # ---- losses

  def logits_at_last(self, mask_flat: jax.Array, tokens: jax.Array, last: jax.Array) -> jax.Array:
    frozen = None
    if self.config.freeze_norm:
      frozen = nodes_lib.clean_norms(self.module, self.lm.params, tokens)
    edits = nodes_lib.masked_edits(self.lm.config, self.split(mask_flat), self.means, frozen)
    logits, _ = run(self.module, self.lm.params, tokens, edits=edits)
    return last_logits(logits, last)

  def task_loss(self, mask_flat, tokens, last, task: Task) -> tuple[jax.Array, jax.Array]:
    final = self.logits_at_last(mask_flat, tokens, last)
    n = tokens.shape[0] // 2
    return binary_loss(final[:n], final[n:], task.tok, task.alt)

  @functools.cached_property
  def _eval_fn(self) -> Callable:
    def margins(mask_flat, tokens, last, tok, alt):
      final = self.logits_at_last(mask_flat, tokens, last)
      return final[:, tok] - final[:, alt]

    return jax.jit(margins)

  def evaluate(self, mask_flat: np.ndarray, task: Task, batch: PairBatch) -> dict[str, float]:
    """{loss, accuracy} of the model with hard mask `mask_flat` over all pairs of `batch`,
    in fixed chunks of `eval_batch` rows (one compiled shape)."""
    n = len(batch.last_a)
    tokens = np.concatenate([batch.tokens_a, batch.tokens_b])
    last = np.concatenate([batch.last_a, batch.last_b])
    out, mask = [], jnp.asarray(mask_flat, jnp.float32)
    for rows, chunk, chunk_last in padded_batches(self.config.eval_batch, tokens, last):
      m = self._eval_fn(mask, jnp.asarray(chunk), jnp.asarray(chunk_last), task.tok, task.alt)
      out.append(np.asarray(m)[:rows])
    margin = np.concatenate(out)
    signed = np.concatenate([margin[:n], -margin[n:]])  # > 0 when the right answer wins
    loss = float(np.mean(np.logaddexp(0.0, -signed[:n]) + np.logaddexp(0.0, -signed[n:])))
    return {"loss": loss, "accuracy": float(np.mean(signed > 0))}

  # ---- optimisation of the mask logits

  def train_scores(self, task: Task, batch: PairBatch, log: Callable | None = None) -> np.ndarray:
    """tau after `steps` AdamW steps on L_task + c sum m over random minibatches of pairs."""
    cfg = self.config
    optimizer = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    tau = jnp.full((self.n_nodes,), cfg.init, jnp.float32)
    opt_state = optimizer.init(tau)

    def objective(tau, tokens, last):
      mask = heaviside(tau, cfg.temperature)
      task_loss, accuracy = self.task_loss(mask, tokens, last, task)
      size = jnp.sum(mask)
      return task_loss + cfg.penalty * size, (task_loss, accuracy, size)

    @jax.jit
    def step(tau, opt_state, tokens, last):
      grads, aux = jax.grad(objective, has_aux=True)(tau, tokens, last)
      updates, opt_state = optimizer.update(grads, opt_state, tau)
      tau = jnp.clip(optax.apply_updates(tau, updates), -1.0, 1.0)
      return tau, opt_state, aux

    rng = np.random.default_rng(cfg.seed)
    n_pairs = len(batch.last_a)
    per_step = min(cfg.batch_pairs, n_pairs)
    bar = tqdm(range(cfg.steps), desc=f"prune {task.name}", unit="step", leave=False)
    for i in bar:
      rows = rng.choice(n_pairs, per_step, replace=False)
      tokens, last = _pair_tokens(batch, rows)
      tau, opt_state, (task_loss, accuracy, size) = step(
        tau, opt_state, jnp.asarray(tokens), jnp.asarray(last)
      )
      if i % 20 == 0 or i == cfg.steps - 1:
        record = {
          "step": i,
          "task_loss": float(task_loss),
          "accuracy": float(accuracy),
          "nodes_on": int(size),
        }
        bar.set_postfix(loss=f"{record['task_loss']:.3f}", nodes=record["nodes_on"])
        if log is not None:
          log(record)
    return np.asarray(tau)

  # ---- discretization

  def order(self, tau: np.ndarray) -> np.ndarray:
    """Node indices by decreasing tau (ties: lower index first)."""
    return np.lexsort((np.arange(len(tau)), -np.asarray(tau)))

  def top_mask(self, tau: np.ndarray, n_kept: int) -> np.ndarray:
    mask = np.zeros(self.n_nodes, np.float32)
    mask[self.order(tau)[:n_kept]] = 1.0
    return mask

  def bisect(self, tau: np.ndarray, task: Task, batch: PairBatch) -> tuple[int, dict, list]:
    """Smallest n such that keeping the n nodes of largest tau gives loss <= target over
    `batch`, by bisection (assumes the loss falls as nodes are added). Returns (n, its
    {loss, accuracy}, the evaluated (n, loss) trail); n is -1 when even every node of
    tau > 0 — and the whole model — misses the target (the best of those is returned)."""
    target, trail, cache = self.config.target_loss, [], {}

    def loss_at(n):
      if n not in cache:
        cache[n] = self.evaluate(self.top_mask(tau, n), task, batch)
        trail.append((n, cache[n]["loss"]))
      return cache[n]["loss"]

    hi = int(np.count_nonzero(tau > 0))
    if loss_at(hi) > target:
      hi = self.n_nodes
      if loss_at(hi) > target:
        best = min(cache, key=lambda n: cache[n]["loss"])
        return -1, cache[best] | {"n_best": best}, trail
    lo = 0  # invariant: loss(hi) <= target; loss(lo) > target unless lo == 0 meets it
    if loss_at(0) <= target:
      return 0, cache[0], trail
    while hi - lo > 1:
      mid = (lo + hi) // 2
      if loss_at(mid) <= target:
        hi = mid
      else:
        lo = mid
    return hi, cache[hi], trail


def prune(
  lm,
  task: Task,
  means: Mapping[str, np.ndarray],
  train: PairBatch,
  heldout: PairBatch,
  config: PruneConfig = PruneConfig(),
  model_name: str = "",
  log: Callable | None = None,
) -> Circuit:
  """The smallest circuit of `lm` for `task` (mask logits trained and bisected on `train`
  pairs), with sufficiency, necessity and edges measured (losses on `heldout` pairs)."""
  pruner = Pruner(lm, means, config)
  tau = pruner.train_scores(task, train, log)
  n_kept, at_target, trail = pruner.bisect(tau, task, train)
  reached = n_kept >= 0
  n_used = n_kept if reached else at_target["n_best"]
  mask = pruner.top_mask(tau, n_used)
  ones, zeros = np.ones(pruner.n_nodes, np.float32), np.zeros(pruner.n_nodes, np.float32)
  kept = {s: np.asarray(m) > 0 for s, m in pruner.split(mask).items()}
  metrics = {
    "target_loss": config.target_loss,
    "reached_target": reached,
    "nodes": int(n_used),
    "nodes_total": pruner.n_nodes,
    "edges": count_edges(lm.params, lm.config, kept),
    "edges_total": count_edges(lm.params, lm.config, {})["total"],
    "train": {
      "full": pruner.evaluate(ones, task, train),
      "circuit": {k: at_target[k] for k in ("loss", "accuracy")},
    },
    "heldout": {
      "full": pruner.evaluate(ones, task, heldout),
      "sufficiency": pruner.evaluate(mask, task, heldout),
      "necessity": pruner.evaluate(1.0 - mask, task, heldout),
      "all_ablated": pruner.evaluate(zeros, task, heldout),
    },
    "bisection": [[int(n), float(v)] for n, v in trail],
    "config": dataclasses.asdict(config),
    "chance_loss": 2 * math.log(2),
  }
  scores = pruner.split(jnp.asarray(tau))
  return Circuit(
    task.name, model_name, kept, {s: np.asarray(v) for s, v in scores.items()}, metrics
  )
