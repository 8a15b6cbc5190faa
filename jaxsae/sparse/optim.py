"""The weight-sparse training step (Gao et al. 2025, "Weight-sparse transformers have
interpretable circuits"): normalized Adam, a sharkfin learning rate, projection, decay.

One update at step s (0-based, of `total_steps`), N = number of gradient entries:

    g ← g / (‖g‖₂ / √N + 1e-5)                  global RMS normalization, every step
    u ← adam(g; β1 0.9, β2 0.95, eps 0.1)         dense moments: pruned weights can regrow
    lr = base_lr · sched(s) · √(f★ / f(s))        1% linear warmup from 0, linear decay to 0
    p ← Π_f(s)(p − lr · u)                        top-k projection (jaxsae.sparse.projection)
    p ← p − weight_decay · lr · p                 decoupled, on projected matrices only

f(s) is the annealed kept fraction and f★ its target; the "sharkfin" factor √(f★ / f(s)) is √f★
while dense, rises as the model sparsifies and is 1 from the end of annealing on, so base_lr is
the learning rate of the fully sparse model. Where the embedding and hidden targets differ, the
factor follows the hidden fraction (most of the weights); one learning rate serves every
parameter. Decay touches exactly the projected (hidden and embedding) matrices: not biases, norm
scales, attention sinks, the bigram table, nor the positional table (a choice: it is a dense
lookup table like the bigram one). Zeros stay zero under it.

This is a step function, `SparseOptimizer.sparse_step_update(params, grads, opt_state, step)`,
rather than a pure optax chain: projection and decay act on the new parameters (a hard top-k of
p + u, then a shrink of what survived), and the kept fraction depends on the step. Written as an
optax update u ← decay(Π(p + u)) − p it would round every kept weight twice and hide that order;
the gradient part alone is the optax chain `SparseOptimizer.transform`.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsae.errors import ConfigError
from jaxsae.sparse.projection import SparsityConfig, annealed_fraction, matrix_kind, project


def scale_by_global_rms(eps: float = 1e-5) -> optax.GradientTransformation:
  """g ← g / (‖g‖₂/√N + eps) over the whole tree (N entries): unit RMS, every step."""

  def update(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    count = sum(leaf.size for leaf in leaves)
    if not count:
      return updates, state
    squares = sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves)
    scale = 1.0 / (jnp.sqrt(squares / count) + eps)
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sharkfin_factor(step, total_steps: int, config: SparsityConfig) -> jax.Array:
  """√(f★ / f(step)) for the hidden fraction: √f★ while dense, 1 once annealed."""
  now = annealed_fraction(
    step, total_steps, config.hidden_fraction, config.anneal_start, config.anneal_end
  )
  return jnp.sqrt(jnp.float32(config.hidden_fraction) / now)


def _check_schedule(total_steps, base_lr, warmup, weight_decay=0.0) -> None:
  p = []
  if not isinstance(total_steps, numbers.Integral) or total_steps <= 0:
    p.append(f"total_steps={total_steps!r} must be a positive int (the length of training)")
  if not isinstance(base_lr, numbers.Real) or base_lr <= 0:
    p.append(f"base_lr={base_lr!r} must be > 0 (the paper's default is 1.28e-2)")
  if not isinstance(warmup, numbers.Real) or not 0 <= warmup < 1:
    p.append(f"warmup={warmup!r} must be a fraction of training in [0, 1) (default 0.01)")
  if not isinstance(weight_decay, numbers.Real) or weight_decay < 0:
    p.append(f"weight_decay={weight_decay!r} must be >= 0 (default 0.1)")
  if p:
    raise ConfigError(p)


def learning_rate(
  step,
  total_steps: int,
  base_lr: float,
  warmup: float = 0.01,
  config: SparsityConfig | None = None,
) -> jax.Array:
  """base_lr · (linear 0→1 over warmup·total, then linear →0 at total) · sharkfin (if config).

  Step 0 has learning rate 0, as optax.linear_schedule(0, lr, warmup) (the SAE schedule).
  """
  _check_schedule(total_steps, base_lr, warmup)
  s = jnp.asarray(step, jnp.float32)
  warm = warmup * total_steps
  decay = (total_steps - s) / (total_steps - warm)
  shape = jnp.where(s < warm, s / max(warm, 1e-12), decay)
  lr = base_lr * jnp.clip(shape, 0.0, 1.0)
  if config is not None:
    lr = lr * sharkfin_factor(step, total_steps, config)
  return lr


def decay_matrices(params: Any, rate) -> Any:
  """p ← p − rate · p on every projected (hidden or embedding) matrix; other leaves unchanged."""

  def decay(path, p):
    if matrix_kind(path, jnp.ndim(p)) is None:
      return p
    return (p * (1.0 - rate)).astype(p.dtype)

  return jax.tree_util.tree_map_with_path(decay, params)


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
  """The full weight-sparse update (module docstring); hashable, so jit can close over it."""

  config: SparsityConfig
  total_steps: int
  base_lr: float = 1.28e-2
  weight_decay: float = 0.1
  warmup: float = 0.01
  b1: float = 0.9
  b2: float = 0.95
  adam_eps: float = 0.1
  rms_eps: float = 1e-5

  @property
  def transform(self) -> optax.GradientTransformation:
    """The gradient part: global RMS normalization, then Adam's scaling (no learning rate)."""
    return optax.chain(
      scale_by_global_rms(self.rms_eps),
      optax.scale_by_adam(b1=self.b1, b2=self.b2, eps=self.adam_eps),
    )

  def init(self, params: Any) -> Any:
    return self.transform.init(params)

  def learning_rate(self, step) -> jax.Array:
    return learning_rate(step, self.total_steps, self.base_lr, self.warmup, self.config)

  def fractions(self, step) -> dict[str, jax.Array]:
    """{kind: kept fraction} applied after the update of `step`."""
    return self.config.fractions(step, self.total_steps)

  def sparse_step_update(self, params: Any, grads: Any, opt_state: Any, step) -> tuple[Any, Any]:
    """(params, opt_state) after one step: normalize, Adam, −lr, apply, project, decay."""
    updates, opt_state = self.transform.update(grads, opt_state, params)
    lr = self.learning_rate(step)
    params = jax.tree.map(lambda p, u: (p - lr * u).astype(p.dtype), params, updates)
    params = project(params, self.fractions(step), self.config)
    return decay_matrices(params, self.weight_decay * lr), opt_state

  __call__ = sparse_step_update


def make_optimizer(
  config: SparsityConfig,
  total_steps: int,
  base_lr: float = 1.28e-2,
  weight_decay: float = 0.1,
  warmup: float = 0.01,
) -> SparseOptimizer:
  """The paper's optimizer for `total_steps` steps; call `.sparse_step_update` each step."""
  _check_schedule(total_steps, base_lr, warmup, weight_decay)
  return SparseOptimizer(config, int(total_steps), float(base_lr), float(weight_decay), warmup)
