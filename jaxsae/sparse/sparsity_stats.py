"""Sparsity numbers of a weight-sparse transformer's parameters, for logging: nonzeros and dead
neuron slices of every projected matrix (`jaxsae.sparse.projection`), nonzero fractions, and
dead neurons, a unit with any of its slices all zero.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.models import weights
from jaxsae.sparse.projection import KINDS, neuron_axes, path_keys, path_name, projected_leaves

# The kernels whose slices make one unit: it is dead when any of them has its slice all zero.
_UNITS = {
  "mlp": ("W_in", "W_gate", "W_out"),
  "attn_qk": ("W_Q", "W_K"),
  "attn_ov": ("W_V", "W_O"),
}


def _all_zero(w: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Per slice (indexed by `axes`, in their order): True where every entry is zero."""
  others = tuple(i for i in range(w.ndim) if i not in axes)
  return jnp.all(w == 0, axis=others)


def nonzero_stats(params: Any) -> dict[str, jax.Array]:
  """Sparsity numbers for logging (jit-compatible scalars).

  nonzeros/<matrix>              nonzero entries of each projected matrix
  dead_slices/<matrix>           its neuron slices with no nonzero at all
  nonzero_fraction[/<kind>]      nonzeros / entries over all projected matrices (of a kind)
  dead_neurons/blocks_i/mlp      MLP neurons with an all-zero fc_in (or fc_gate) column or
                                 fc_out row
  dead_neurons/blocks_i/attn_qk  query channels (h, k) with all-zero query inputs or all-zero
                                 key inputs at their KV head's (g, k)
  dead_neurons/blocks_i/attn_ov  query channels (h, k) with all-zero value inputs at their KV
                                 head's (g, k) or an all-zero out row
  dead_neurons                   the sum of the three above over layers
  """
  stats: dict[str, jax.Array] = {}
  totals = {kind: [0, 0] for kind in (None, *KINDS)}
  by_name = {}
  for path, w, kind in projected_leaves(params)[0]:
    if kind is None:
      continue
    name = path_name(path)
    by_name[path_keys(path)] = w
    nonzeros = jnp.count_nonzero(w).astype(jnp.int32)
    stats[f"nonzeros/{name}"] = nonzeros
    stats[f"dead_slices/{name}"] = jnp.sum(_all_zero(w, neuron_axes(path))).astype(jnp.int32)
    for key in (None, kind):
      totals[key][0] = totals[key][0] + nonzeros
      totals[key][1] += int(np.size(w))
  for key, (nonzeros, numel) in totals.items():
    if numel:
      suffix = "" if key is None else f"/{key}"
      stats[f"nonzero_fraction{suffix}"] = jnp.asarray(nonzeros, jnp.float32) / numel
  dead_total = jnp.zeros((), jnp.int32)
  layers = sorted({keys[0] for keys in by_name if weights.role_at(keys) is not None})
  for block in layers:
    layer = int(block.removeprefix("blocks_"))
    for unit, roles in _UNITS.items():
      found = {r: by_name.get(weights.kernel_path(layer, r)) for r in roles}
      if any(w is None for r, w in found.items() if r not in weights.OPTIONAL_ROLES):
        continue
      dead_parts = [
        _all_zero(w, weights.LINEARS[r].neuron_axes) for r, w in found.items() if w is not None
      ]
      heads = max(part.shape[0] for part in dead_parts)  # H for attention, F for the MLP.
      dead = functools.reduce(
        jnp.logical_or, [weights.expand_kv_heads(part, heads, axis=0) for part in dead_parts]
      )
      dead = jnp.sum(dead).astype(jnp.int32)
      stats[f"dead_neurons/{block}/{unit}"] = dead
      dead_total = dead_total + dead
  stats["dead_neurons"] = dead_total
  return stats
