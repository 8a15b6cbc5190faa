"""Top-k magnitude projection of weight matrices (Gao et al. 2025, "Weight-sparse transformers
have interpretable circuits").

After every optimizer step each weight matrix W with n entries is projected onto ‖W‖₀ ≤ k,
k = round(f · n) (round half to even):

    Π_k(W) = W ⊙ 1[|w| is among the k largest of |W|]      ties: the lower row-major index wins

with a floor of j = min_per_neuron nonzeros per neuron slice: the j largest |w| of every slice
are kept first (min(j, slice size) for tiny slices), then the remaining k − j·S (S slices) go to
the largest of the rest, so the total is still exactly k. If j·S > k no such projection exists:
`check_budget`, `project` and a static `magnitude_mask` raise a ConfigError naming the matrix and
the fix (lower min_per_neuron or raise the fraction). Gradients and Adam moments stay dense, so a
pruned weight regrows as soon as its update lifts it into the top k.

The kept fraction anneals linearly in the number of nonzeros (so linearly in f, not in log f, as
in the paper) from dense to the target between `anneal_start` and `anneal_end` of training:

    f(t) = 1                                                t ≤ start      (t = step / total)
           target + (1 − target) (end − t) / (end − start)   start < t < end
           target                                           t ≥ end

Matrices, their kind and their neuron slices (a slice is every entry sharing its index along the
slice axes; D = d_model, H = heads, G = KV heads, K = d_head, F = d_mlp, V = vocab). The hidden
ones are every block kernel of `jaxsae.models.weights`, with its neuron axes:

    kind       parameter                        shape    slice axes  one slice is
    hidden     blocks_i/attn/query              D×H×K    (1, 2)      a q channel's inputs
    hidden     blocks_i/attn/{key,value}        D×G×K    (1, 2)      a k/v channel's inputs
    hidden     blocks_i/attn/out                H×K×D    (0, 1)      an attention channel's outputs
    hidden     blocks_i/mlp/fc_in               D×F      (1,)        an MLP neuron's inputs
    hidden     blocks_i/mlp/fc_gate (gated)     D×F      (1,)        an MLP neuron's gate inputs
    hidden     blocks_i/mlp/fc_out              F×D      (0,)        an MLP neuron's outputs
    embedding  embed/embedding                  V×D      (1,)        a residual channel's inputs
    embedding  unembed/kernel (untied only)     D×V      (0,)        a residual channel's outputs

For the embeddings the "neurons" are taken to be the residual channels (our reading; the paper
states the floor per neuron). Never projected: biases, norm scales, attention sinks, the
positional table `pos_embed` and the bigram table. Any other parameter of two or more dims is an
error that names it, so a new layer is never silently left dense.

Everything is jnp (jit-compatible, works on sharded parameters without a host round trip). The
mask, for a static k or a traced one (annealing under jit), is `jaxsae.topk_mask.topk_mask`: a
threshold value and the index of the last kept entry at it, found by bit bisection on CPU and by
`lax.top_k` or a stable sort elsewhere, then a mask computed entrywise. |w| is compared in
float32 (top_k on bfloat16 is ~100× slower on CPU). Under annealing, k is round(f · n) in
float32 (off by at most a few entries for matrices past 2²⁴ entries), except at the two ends,
where it is exactly n and exactly the target count.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae import config_check
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models import weights
from jaxsae.topk_mask import topk_mask

HIDDEN = "hidden"
EMBEDDING = "embedding"
KINDS = (HIDDEN, EMBEDDING)

_EMBEDDING_SLICE_AXES = {("embed", "embedding"): (1,), ("unembed", "kernel"): (0,)}
_NEVER_LEAF_NAMES = frozenset({"bias", "scale", "sink"})
_NEVER_PATHS = frozenset({("pos_embed",), ("bigram",)})


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
  """Target kept fractions, the per-neuron floor and the annealing window.

  hidden_fraction:    kept fraction of every attention q/k/v/out and MLP in/out matrix (1/64).
  embedding_fraction: kept fraction of the token embedding and unembedding (milder, e.g. 1/16).
  min_per_neuron:     j: nonzeros always kept in every neuron slice (0 disables the floor).
  anneal_start:       fraction of training at which annealing from dense begins.
  anneal_end:         fraction of training at which the targets are reached.
  """

  hidden_fraction: float
  embedding_fraction: float
  min_per_neuron: int = 4
  anneal_start: float = 0.01
  anneal_end: float = 0.5

  def __post_init__(self):
    problems = self.problems()
    if problems:
      raise ConfigError(problems)

  def problems(self) -> list[str]:
    """Every invalid field, with its fix."""
    p: list[str] = []
    for name in ("hidden_fraction", "embedding_fraction"):
      value = getattr(self, name)
      ok = isinstance(value, numbers.Real) and 0 < value <= 1
      config_check.require(
        ok, p, f"sparsity.{name}={value!r} must be in (0, 1]; e.g. 1/64 hidden, 1/16 embeddings"
      )
    j = self.min_per_neuron
    config_check.require(
      isinstance(j, numbers.Integral) and not isinstance(j, bool) and j >= 0,
      p,
      f"sparsity.min_per_neuron={j!r} must be an int >= 0 (the paper uses 4; 0 disables it)",
    )
    for name in ("anneal_start", "anneal_end"):
      value = getattr(self, name)
      config_check.require(
        isinstance(value, numbers.Real) and 0 <= value <= 1,
        p,
        f"sparsity.{name}={value!r} must be a fraction of training in [0, 1]",
      )
    if not p and self.anneal_start > self.anneal_end:
      p.append(
        f"sparsity.anneal_start={self.anneal_start} is after anneal_end={self.anneal_end}; "
        "annealing must start before it ends (default 0.01 to 0.5)"
      )
    return p

  def target(self, kind: str) -> float:
    """The final kept fraction of a matrix kind ("hidden" or "embedding")."""
    if kind == HIDDEN:
      return float(self.hidden_fraction)
    if kind == EMBEDDING:
      return float(self.embedding_fraction)
    raise JaxsaeError(f"unknown matrix kind {kind!r}; use one of {KINDS}")

  def fractions(self, step, total_steps: int) -> dict[str, jax.Array]:
    """{kind: annealed kept fraction at `step`}: what `project` takes."""
    return {
      kind: annealed_fraction(
        step, total_steps, self.target(kind), self.anneal_start, self.anneal_end
      )
      for kind in KINDS
    }


def annealed_fraction(
  step, total_steps: int, target: float, start: float = 0.01, end: float = 0.5
) -> jax.Array:
  """Kept fraction at `step`: 1 until `start`·total, linear to `target` at `end`·total, then it.

  Linear in the fraction, hence in the number of nonzeros (not in log). float32; traceable.
  """
  if not total_steps or total_steps <= 0:
    raise JaxsaeError(f"total_steps={total_steps!r} must be a positive number of training steps")
  t = jnp.asarray(step, jnp.float32) / total_steps
  if end > start:
    progress = jnp.clip((t - start) / (end - start), 0.0, 1.0)
  else:
    progress = (t >= end).astype(jnp.float32)
  target = jnp.float32(target)
  between = target + (1.0 - target) * (1.0 - progress)
  return jnp.where(progress <= 0, 1.0, jnp.where(progress >= 1, target, between))


def _key_name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def path_keys(path: Any) -> tuple[str, ...]:
  """A parameter path as strings: 'a/b/c', ('a', 'b', 'c') or a jax key path."""
  keys = tuple(path.split("/")) if isinstance(path, str) else tuple(_key_name(e) for e in path)
  return keys[1:] if keys[:1] == ("params",) else keys


def path_name(path: Any) -> str:
  """'blocks_0/mlp/fc_in/kernel': the name used in messages and `sparsity_stats`."""
  return "/".join(path_keys(path))


def _lookup(keys: tuple[str, ...]) -> tuple[str, tuple[int, ...]] | None:
  if len(keys) == 2 and keys in _EMBEDDING_SLICE_AXES:
    return EMBEDDING, _EMBEDDING_SLICE_AXES[keys]
  found = weights.role_at(keys)
  if found is not None and found[2] == "kernel":
    return HIDDEN, weights.LINEARS[found[1]].neuron_axes
  return None


def matrix_kind(path: Any, ndim: int | None = None) -> str | None:
  """ "hidden", "embedding", or None (never projected) for a parameter of `Transformer`.

  `path` is 'blocks_0/attn/query/kernel', a tuple of keys or a jax key path. An unknown
  parameter raises, naming it, unless `ndim` says it is a vector (vectors are never projected).
  """
  keys = path_keys(path)
  found = _lookup(keys)
  if found is not None:
    return found[0]
  if keys in _NEVER_PATHS or (keys and keys[-1] in _NEVER_LEAF_NAMES):
    return None
  if ndim is not None and ndim < 2:
    return None
  raise JaxsaeError(
    f"parameter {path_name(path)!r} is not a known weight matrix of the transformer, so the "
    "sparsity projection does not know its kind; add it to the hidden, embedding or "
    "never-projected tables in jaxsae/sparse/projection.py"
  )


def neuron_axes(path: Any) -> tuple[int, ...]:
  """Axes of a projected matrix that index its neuron slices (table in the module docstring)."""
  found = _lookup(path_keys(path))
  if found is None:
    matrix_kind(path)  # Raises for an unknown parameter.
    raise JaxsaeError(
      f"parameter {path_name(path)!r} is never projected, so it has no neuron slices; ask only "
      "about matrices for which matrix_kind is not None"
    )
  return found[1]


def _axes(slice_axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
  if slice_axis is None:
    return ()
  axes = (slice_axis,) if isinstance(slice_axis, numbers.Integral) else tuple(slice_axis)
  in_range = all(-ndim <= int(a) < ndim for a in axes)
  if not in_range or len({int(a) % ndim for a in axes}) != len(axes):
    raise JaxsaeError(
      f"slice_axis={slice_axis!r} is not a set of distinct axes of a {ndim}-D array"
    )
  return tuple(sorted(int(a) % ndim for a in axes))


def slice_layout(shape: Sequence[int], slice_axis) -> tuple[int, int]:
  """(number of slices S, entries per slice M) of a matrix of `shape` sliced along `slice_axis`."""
  axes = _axes(slice_axis, len(shape))
  n_slices = math.prod(shape[a] for a in axes)
  return n_slices, math.prod(shape) // max(n_slices, 1)


def forced_count(shape: Sequence[int], min_per_slice: int, slice_axis) -> int:
  """Entries the per-slice floor keeps: S · min(j, M) (0 without slices or floor)."""
  if not min_per_slice or slice_axis is None:
    return 0
  n_slices, per_slice = slice_layout(shape, slice_axis)
  return n_slices * min(min_per_slice, per_slice)


def kept_count(fraction: float, numel: int) -> int:
  """k = round(fraction · numel), half to even like jnp.round."""
  return int(round(float(fraction) * numel))


def _slice_floor(a: jax.Array, j: int, axes: tuple[int, ...]) -> jax.Array:
  """Bool mask of the j largest entries of each slice (ties: lower index within the slice)."""
  others = tuple(i for i in range(a.ndim) if i not in axes)
  perm = axes + others
  n_slices, per_slice = slice_layout(a.shape, axes)
  j = min(j, per_slice)
  if j == per_slice:
    return jnp.ones(a.shape, bool)
  a_SxM = jnp.transpose(a, perm).reshape(n_slices, per_slice)
  forced = topk_mask(a_SxM, j).reshape(tuple(a.shape[i] for i in perm))
  return jnp.transpose(forced, tuple(np.argsort(perm)))


def _budget_problem(name: str, k: int, forced: int, numel: int, j: int, what: str) -> str:
  return (
    f"{name}: min_per_neuron={j} forces {forced} nonzeros but {what} keeps only {k} of "
    f"{numel}; lower sparsity.min_per_neuron, or raise the fraction to at least "
    f"{forced / numel:.4g}"
  )


def magnitude_mask(
  w: jax.Array, k, min_per_slice: int = 0, slice_axis: int | Sequence[int] | None = None
) -> jax.Array:
  """Bool mask of exactly k entries of `w`: each slice's min_per_slice largest |w|, then the largest.

  k is a Python int (k below the floor raises ConfigError) or a traced int (it cannot raise, so
  it is raised to the floor and clipped to w.size). Ties go to the lower index: within a slice
  in row-major order of the other axes, globally in row-major order of `w`. Entries must be
  finite.
  """
  a = jnp.abs(w).astype(jnp.float32)
  numel = a.size
  axes = _axes(slice_axis, a.ndim)
  forced = forced_count(a.shape, min_per_slice, axes or None)
  score = a
  if forced:
    score = jnp.where(_slice_floor(a, min_per_slice, axes), jnp.inf, a)
  if not isinstance(k, numbers.Integral):
    k = jnp.clip(jnp.asarray(k, jnp.int32), forced, numel)
  else:
    k = int(k)
    if not 0 <= k <= numel:
      raise JaxsaeError(f"k={k} must be between 0 and the {numel} entries of the matrix")
    if k < forced:
      raise ConfigError(
        [_budget_problem(f"matrix of shape {a.shape}", k, forced, numel, min_per_slice, "k")]
      )
    if k == numel:
      return jnp.ones(a.shape, bool)
    if k == 0:
      return jnp.zeros(a.shape, bool)
  return topk_mask(score.reshape(-1), k).reshape(a.shape)


def topk_magnitude(
  w: jax.Array, k, min_per_slice: int = 0, slice_axis: int | Sequence[int] | None = None
) -> jax.Array:
  """w with all but the k entries of `magnitude_mask` zeroed (same dtype)."""
  return jnp.where(magnitude_mask(w, k, min_per_slice, slice_axis), w, jnp.zeros((), w.dtype))


def projected_leaves(params: Any):
  """(path, leaf, kind) of every parameter; kind None for the never-projected."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = [(path, leaf, matrix_kind(path, np.ndim(leaf))) for path, leaf in leaves]
  return out, treedef


def check_budget(params: Any, config: SparsityConfig) -> None:
  """Raise one ConfigError listing every matrix whose target k is below its per-neuron floor.

  Uses shapes only, so it works on arrays, ShapeDtypeStructs and tracers.
  """
  problems = []
  for path, leaf, kind in projected_leaves(params)[0]:
    if kind is None:
      continue
    shape = tuple(np.shape(leaf))
    numel = math.prod(shape)
    forced = forced_count(shape, config.min_per_neuron, neuron_axes(path))
    k = kept_count(config.target(kind), numel)
    if k < forced:
      what = f"sparsity.{kind}_fraction={config.target(kind):.4g}"
      problems.append(
        _budget_problem(path_name(path), k, forced, numel, config.min_per_neuron, what)
      )
  if problems:
    raise ConfigError(problems)


def _static_fraction(value) -> float | None:
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return float(value)
  return None


def project(params: Any, fraction_now: Mapping[str, Any], config: SparsityConfig) -> Any:
  """Project every hidden and embedding matrix onto its kept fraction; other leaves unchanged.

  fraction_now: {kind: fraction}, Python floats (static k) or traced scalars, e.g.
  `config.fractions(step, total_steps)`. The per-neuron floor is config.min_per_neuron.
  """
  check_budget(params, config)
  missing = [kind for kind in KINDS if kind not in fraction_now]
  if missing:
    raise JaxsaeError(
      f"fraction_now lacks {missing}; pass a fraction for each of {KINDS}, e.g. "
      "config.fractions(step, total_steps)"
    )
  leaves, treedef = projected_leaves(params)
  out = []
  for path, w, kind in leaves:
    if kind is None:
      out.append(w)
      continue
    axes, numel = neuron_axes(path), int(np.size(w))
    fraction = _static_fraction(fraction_now[kind])
    if fraction is not None:
      if not 0 < fraction <= 1:
        raise JaxsaeError(f"fraction_now[{kind!r}]={fraction} must be in (0, 1]")
      k = kept_count(fraction, numel)
      forced = forced_count(np.shape(w), config.min_per_neuron, axes)
      if k < forced:
        what = f"fraction_now[{kind!r}]={fraction:.4g}"
        problem = _budget_problem(path_name(path), k, forced, numel, config.min_per_neuron, what)
        raise ConfigError([problem])
      out.append(topk_magnitude(w, k, config.min_per_neuron, axes))
      continue
    fraction = jnp.asarray(fraction_now[kind], jnp.float32)
    k = jnp.round(fraction * numel).astype(jnp.int32)
    target = config.target(kind)
    k = jnp.where(fraction == jnp.float32(target), kept_count(target, numel), k)
    k = jnp.where(fraction >= 1, numel, k)
    out.append(
      jax.lax.cond(
        k >= numel,
        lambda w, k: w,
        lambda w, k, axes=axes: topk_magnitude(w, k, config.min_per_neuron, axes),
        w,
        k,
      )
    )
  return jax.tree_util.tree_unflatten(treedef, out)
