"""The study's grid: families of SAEs (an architecture plus settings) × widths × sparsity values,
turned into one SAE training config whose variant groups train together in one pass.

A *run* is (family, width, values): the family's SAEs at that width, one per value — k for the
TopK-style families (topk, batchtopk) and a JumpReLU that targets an L0, λ for the penalty
families. Each run becomes a variant group `<family>_n<width>` whose members are vmapped (one
compiled step trains the whole grid).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxsae import config_check
from jaxsae.sae import sweep, train_config

K_ARCHITECTURES = ("topk", "batchtopk")  # Families whose values are k; the others' are λ.

# Each family: its architecture and the `sae` fields that make it what it is (the architecture's
# recipe from train_config.RECIPES applies first).
FAMILIES: dict[str, dict] = {
  "topk": {"architecture": "topk"},
  "topk_multi": {"architecture": "topk", "multi_topk": True},
  # TopK without AuxK and without tied init: the paper's dead-latent ablation.
  "topk_plain": {"architecture": "topk", "k_aux": 0, "tied_init": False},
  "batchtopk": {"architecture": "batchtopk"},
  "relu": {"architecture": "relu"},
  "gated": {"architecture": "gated"},
  "prolu_relu": {"architecture": "prolu_relu"},
  "prolu_ste": {"architecture": "prolu_ste"},
  "jumprelu": {"architecture": "jumprelu"},
}


@dataclasses.dataclass(frozen=True)
class Run:
  family: str
  width: int
  values: tuple[float, ...]

  @property
  def variant(self) -> str:
    return f"{self.family}_n{self.width}"

  @property
  def architecture(self) -> str:
    return FAMILIES[self.family]["architecture"]

  @property
  def swept(self) -> str:
    """ "k" for the TopK-style families and for a JumpReLU that targets an L0 (its recipe's
    `jumprelu_penalty="target"`: k is the target), else the λ of the penalty."""
    fields = {**train_config.RECIPES.get(self.architecture, {}), **FAMILIES[self.family]}
    targets = fields.get("jumprelu_penalty") == "target"
    return "k" if self.architecture in K_ARCHITECTURES or targets else "sparsity_coefficient"


def runs_of(grid: ml_collections.ConfigDict) -> list[Run]:
  return [Run(str(f), int(w), tuple(v)) for f, w, v in grid.runs]


def problems(grid: ml_collections.ConfigDict) -> list[str]:
  """Every problem of the `grid` section, with its fix."""
  p: list[str] = []
  seen = set()
  for entry in grid.runs:
    if not (isinstance(entry, (tuple, list)) and len(entry) == 3):
      p.append(f"grid.runs entry {entry!r} must be (family, width, (values, ...))")
      continue
    family, width, values = entry
    config_check.require_choice(family, list(FAMILIES), "grid.runs family", p)
    config_check.require(
      isinstance(width, int) and width > 0, p, f"grid.runs width {width!r} must be a positive int"
    )
    config_check.require(
      isinstance(values, (tuple, list)) and len(values) > 0,
      p,
      f"grid.runs values of {family}@{width} must be a non-empty tuple (k or λ values)",
    )
    config_check.require(
      (family, width) not in seen,
      p,
      f"grid.runs lists {family} at width {width} twice; merge the value tuples",
    )
    seen.add((family, width))
  families = {r[0] for r in grid.runs if isinstance(r, (tuple, list)) and len(r) == 3}
  widths = {r[1] for r in grid.runs if isinstance(r, (tuple, list)) and len(r) == 3}
  config_check.require(
    grid.reference_width in widths,
    p,
    f"grid.reference_width={grid.reference_width} has no run; use one of {sorted(widths)}",
  )
  config_check.require(grid.reference_index >= 0, p, "grid.reference_index must be >= 0")
  config_check.require(
    grid.reference_family in families,
    p,
    f"grid.reference_family={grid.reference_family!r} must be one of the families in grid.runs",
  )
  return p


def training_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The SAE training config (train_config schema) that trains every run of `config.grid`."""
  c = train_config.base_config("topk")
  for section in ("seed", "train", "optim", "mesh"):
    c[section] = config[section]
  c.data.update(config.data.to_dict())
  for run in runs_of(config.grid):
    fields = {k: v for k, v in FAMILIES[run.family].items()}
    fields.update(train_config.RECIPES.get(run.architecture, {}))
    fields.update(dict(config.grid.family_settings.get(run.family, {}) or {}))
    fields["n_latents"] = run.width
    values = tuple(int(v) for v in run.values) if run.swept == "k" else run.values
    fields["sweep"] = {run.swept: values}
    c.variants[run.variant] = fields
  c.sweep.architecture = tuple(r.variant for r in runs_of(config.grid))
  return c


def member_rows(groups: list[sweep.Group], grid: ml_collections.ConfigDict) -> list[dict]:
  """One descriptor per trained SAE: group, index, label, family, architecture, width, value."""
  by_variant = {r.variant: r for r in runs_of(grid)}
  out = []
  for group in groups:
    run = by_variant[group.name]
    for index, member in enumerate(group.members):
      out.append(
        {
          "group": group.name,
          "index": index,
          "label": group.labels[index],
          "family": run.family,
          "architecture": run.architecture,
          "width": run.width,
          "k": member.k if run.swept == "k" else None,
          "sparsity_coefficient": member.sparsity_coefficient if run.swept != "k" else None,
          "value_index": index,
        }
      )
  return out
