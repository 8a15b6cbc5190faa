"""The collectives an SAE needs when its batch and latents are split across devices.

Inside `jax.shard_map`, each device holds rows `B/D` of the batch and latents `n/M` of the
dictionary. `Axes` names the mesh axes (None outside shard_map, where every helper reduces to
the single-device formula), so an architecture is written once for 1 device and for a pod.

Exact top-k across latent shards (`top_k_over_latents`): each device takes its local top-k,
the (value, global index) candidates are gathered over the latent axis (M·k per row, never the
n-wide pre-activations), and the global top-k of the candidates is taken. A global winner is
always among its own shard's local top-k, so the result equals `lax.top_k` on the full row.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Axes:
  """Mesh axes the batch (`batch`) and the latents (`latents`) are split over, if any."""

  batch: str | None = None
  latents: str | None = None

  def sum_latents(self, x):
    """Sum of per-shard partial sums over the latent axis (e.g. z_local @ W_dec_local)."""
    return x if self.latents is None else jax.lax.psum(x, self.latents)

  def sum_batch(self, x):
    """Sum of per-shard partial sums over the batch axis."""
    return x if self.batch is None else jax.lax.psum(x, self.batch)

  def sum_all(self, x):
    return self.sum_batch(self.sum_latents(x))

  def min_all(self, x):
    """Minimum over every shard (batch and latents)."""
    axes = tuple(a for a in (self.batch, self.latents) if a is not None)
    return jax.lax.pmin(x, axes) if axes else x

  def vary(self, x):
    """`x` typed as varying over every split axis (a no-op forward; its transpose is the psum that
    sums a replicated parameter's per-shard gradients). Needed before a custom VJP, whose
    gradients are per-shard partial sums, sees a replicated value."""
    axes = tuple(a for a in (self.batch, self.latents) if a is not None)
    if not axes:
      return x
    missing = tuple(a for a in axes if a not in jax.typeof(x).manual_axis_type.varying)
    return jax.lax.pcast(x, missing, to="varying") if missing else x

  def latent_offset(self, n_local: int):
    """Global index of this shard's first latent."""
    return 0 if self.latents is None else jax.lax.axis_index(self.latents) * n_local

  def latent_shards(self) -> int:
    return 1 if self.latents is None else jax.lax.axis_size(self.latents)

  def batch_shards(self) -> int:
    return 1 if self.batch is None else jax.lax.axis_size(self.batch)


def _gather_candidates(values, indices, axis: str):
  """Concatenate each shard's (values, indices) along the last axis, in shard order."""
  values = jax.lax.all_gather(values, axis, axis=values.ndim - 1, tiled=True)
  indices = jax.lax.all_gather(indices, axis, axis=indices.ndim - 1, tiled=True)
  return values, indices


def top_k_over_latents(pre_BxN: jax.Array, k: int, axes: Axes) -> tuple[jax.Array, jax.Array]:
  """Top-k of each row over all latents, as (values B×k, local indices B×k).

  Indices are into this shard's latents; a winner held by another shard gets the index
  `n_local` (out of range), which `scatter_latents` drops. Values are sorted descending, and
  their gradient flows back to the shard that holds each winner.
  """
  pre_BxN = pre_BxN.astype(jnp.float32)  # lax.top_k on bf16 is ~100x slower on CPU.
  n_local = pre_BxN.shape[-1]
  values, indices = jax.lax.top_k(pre_BxN, min(k, n_local))
  if axes.latents is None:
    return values, indices
  offset = axes.latent_offset(n_local)
  cand_values, cand_indices = _gather_candidates(values, indices + offset, axes.latents)
  values, position = jax.lax.top_k(cand_values, k)
  local = jnp.take_along_axis(cand_indices, position, axis=-1) - offset
  local = jnp.where((local >= 0) & (local < n_local), local, n_local)
  return values, local


def scatter_latents(values_BxK: jax.Array, indices_BxK: jax.Array, n_local: int) -> jax.Array:
  """The dense B×n_local matrix holding `values` at `indices` (out-of-range indices dropped)."""
  rows = jnp.arange(values_BxK.shape[0])[:, None]
  dense = jnp.zeros((values_BxK.shape[0], n_local), values_BxK.dtype)
  return dense.at[rows, indices_BxK].set(values_BxK, mode="drop")


def kth_largest_over_batch(
  values_BxN: jax.Array, count: jax.Array | int, max_count: int, axes: Axes
) -> jax.Array:
  """The `count`-th largest entry of the whole (global) batch × latents matrix (BatchTopK).

  Each device contributes its own top min(max_count, local size) entries; the global top
  `max_count` lies among them. `max_count` is static; `count <= max_count` may be traced (a
  vmapped sweep over k).
  """
  flat = values_BxN.astype(jnp.float32).reshape(-1)
  local, _ = jax.lax.top_k(flat, min(max_count, flat.shape[0]))
  for axis in (axes.latents, axes.batch):
    if axis is not None:
      local = jax.lax.all_gather(local, axis, tiled=True)
  top, _ = jax.lax.top_k(local, max_count)
  return top[count - 1]
