"""Many SAEs in one compiled step: sweeps planned as groups of vmapped members.

A sweep is the product of the lists in `config.sweep` (k, sparsity_coefficient, aux_alpha, seed,
architecture). SAEs of one architecture form a *group*: their parameters are stacked on a
leading member axis and trained by one vmapped step, with the top-k taken at the group's largest
k and masked to each member's own (`Hyper.k`), so every member is exactly the SAE it would be
alone. Groups of different architectures share the batch inside the same jitted step, so one
pass over the activations trains them all. A single SAE is a sweep of one member.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from jaxsae.sae.base import Hyper
from jaxsae.sae.config import SAEConfig

SWEEPABLE = ("k", "sparsity_coefficient", "aux_alpha", "seed")


@dataclasses.dataclass(frozen=True)
class Member:
  """One SAE of a sweep: its architecture and the values that may differ inside a group."""

  architecture: str
  k: int
  sparsity_coefficient: float
  aux_alpha: float
  seed: int

  def label(self, varying: Sequence[str]) -> str:
    """A short name: the architecture, plus the swept values, e.g. "topk[k=16,seed=1]"."""
    values = [f"{name}={getattr(self, name)}" for name in varying if name != "architecture"]
    name = self.architecture if "architecture" in varying or not values else ""
    return f"{name}[{','.join(values)}]" if values else name


@dataclasses.dataclass(frozen=True)
class Group:
  """SAEs of one architecture trained as a vmapped stack. `config.k` is the members' max k."""

  config: SAEConfig
  members: tuple[Member, ...]
  labels: tuple[str, ...]

  @property
  def name(self) -> str:
    return self.config.architecture

  @property
  def size(self) -> int:
    return len(self.members)

  def hyper(self, sparsity_scale: Any = 1.0) -> Hyper:
    """Stacked hyperparameters (leading member axis), λ scaled by the warmup factor."""
    return Hyper(
      k=jnp.asarray([m.k for m in self.members], jnp.int32),
      sparsity_coefficient=jnp.asarray([m.sparsity_coefficient for m in self.members], jnp.float32)
      * sparsity_scale,
      aux_alpha=jnp.asarray([m.aux_alpha for m in self.members], jnp.float32),
    )

  def member_config(self, index: int) -> SAEConfig:
    """The config of member `index` as a stand-alone SAE (for export and one-at-a-time runs)."""
    m = self.members[index]
    return dataclasses.replace(
      self.config, k=m.k, sparsity_coefficient=m.sparsity_coefficient, aux_alpha=m.aux_alpha
    )


def _values(sweep: Mapping[str, Any], name: str, default: Any) -> list[Any]:
  values = list(sweep.get(name) or ())
  return values if values else [default]


def plan(
  sae: Mapping[str, Any],
  sweep: Mapping[str, Any],
  seed: int,
  d_in: int,
  overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Group]:
  """Groups for the base SAE settings `sae` and the lists in `sweep` (empty lists: base value).

  `overrides[arch]` replaces fields of `sae` for that architecture (e.g. its own λ).
  """
  architectures = _values(sweep, "architecture", sae["architecture"])
  bases = {arch: {**dict(sae), **dict((overrides or {}).get(arch, {}))} for arch in architectures}
  axes = {
    name: {
      arch: _values(sweep, name, seed if name == "seed" else bases[arch][name])
      for arch in architectures
    }
    for name in SWEEPABLE
  }
  varying = ["architecture"] if len(architectures) > 1 else []
  varying += [name for name in SWEEPABLE if any(len(v) > 1 for v in axes[name].values())]
  groups = []
  for arch in architectures:
    members = tuple(
      Member(arch, int(k), float(lam), float(alpha), int(s))
      for k, lam, alpha, s in itertools.product(*(axes[name][arch] for name in SWEEPABLE))
    )
    fields = {**bases[arch], "architecture": arch, "d_in": d_in}
    fields["k"] = max(m.k for m in members)
    fields["matryoshka"] = tuple(fields.get("matryoshka") or ())
    config = SAEConfig(**fields)
    groups.append(Group(config, members, tuple(m.label(varying) for m in members)))
  return groups
