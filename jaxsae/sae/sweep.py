"""Many SAEs in one compiled step: sweeps planned as groups of vmapped members.

A sweep is the product of the lists in `config.sweep` (k, sparsity_coefficient, aux_alpha, seed,
architecture). An entry of the architecture list may also name a *variant*: a named group with its
own architecture, `sae` fields (width, Multi-TopK, untied init, …) and sweep lists. SAEs of one
architecture (or variant) form a *group*: their parameters are stacked on a
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
  """One SAE of a sweep: its group's name (an architecture or a variant) and the values that may
  differ inside a group."""

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
  """SAEs of one architecture trained as a vmapped stack. `config.k` is the members' max k.
  `variant` names a variant group (empty: the group is named by its architecture)."""

  config: SAEConfig
  members: tuple[Member, ...]
  labels: tuple[str, ...]
  variant: str = ""

  @property
  def name(self) -> str:
    return self.variant or self.config.architecture

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
  variants: Mapping[str, Mapping[str, Any]] | None = None,
  d_out: int | None = None,
) -> list[Group]:
  """Groups for the base SAE settings `sae` and the lists in `sweep` (empty lists: base value).

  `d_out`: the width of a transcoder's targets (its SAEs get transcode=True); None: SAEs.

  `overrides[arch]` replaces fields of `sae` for that architecture (e.g. its own λ).
  `variants[name]` = {"architecture": arch, <sae field>: value, ..., "sweep": {<list>: (...)}}
  defines a group called `name`: arch's settings with those fields replaced and, for each list
  its own "sweep" names, that list instead of the global one. Names in `sweep["architecture"]`
  are architectures or variants.
  """
  variants = variants or {}
  names = _values(sweep, "architecture", sae["architecture"])
  if len(set(names)) != len(names):
    raise ValueError(f"sweep.architecture={tuple(names)} names a group twice; list each once")
  bases, own_sweeps = {}, {}
  for name in names:
    fields = dict(variants.get(name, {}))
    arch = fields.pop("architecture", name)
    own_sweeps[name] = dict(fields.pop("sweep", None) or {})
    bases[name] = {**dict(sae), **dict((overrides or {}).get(arch, {})), **fields}
    bases[name]["architecture"] = arch
  axes = {
    field: {
      name: _values(
        own_sweeps[name] if own_sweeps[name].get(field) else sweep,
        field,
        seed if field == "seed" else bases[name][field],
      )
      for name in names
    }
    for field in SWEEPABLE
  }
  groups = []
  for name in names:
    # Labels name the group (when there are several) and the values varying inside it.
    varying = ["architecture"] if len(names) > 1 else []
    varying += [field for field in SWEEPABLE if len(axes[field][name]) > 1]
    members = tuple(
      Member(name, int(k), float(lam), float(alpha), int(s))
      for k, lam, alpha, s in itertools.product(*(axes[field][name] for field in SWEEPABLE))
    )
    fields = {**bases[name], "d_in": d_in}
    if d_out is not None:
      fields.update(d_out=d_out, transcode=True)
    fields["k"] = max(m.k for m in members)
    fields["matryoshka"] = tuple(fields.get("matryoshka") or ())
    config = SAEConfig(**fields)
    labels = tuple(m.label(varying) for m in members)
    groups.append(Group(config, members, labels, variant=name if name in variants else ""))
  return groups
