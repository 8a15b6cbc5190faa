"""Where bridges go and how they are built and trained: the residual sites (`bridge_sites`,
`check_sites`) and `BridgeConfig`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.models.config import TransformerConfig

ALL_SITES = "all"
INITS = ("lstsq", "random")
DEFAULT_TOPK_FRACTION = 0.25
_SITE_RE = re.compile(r"^blocks\.(\d+)\.(resid_pre|resid_mid|resid_post)$")


def bridge_sites(n_layers: int) -> list[str]:
  """The 2L+1 residual sites in forward order: blocks.0.resid_pre (after the embedding), then
  blocks.{l}.resid_mid (after attention) and blocks.{l}.resid_post (after the MLP) per layer."""
  sites = ["blocks.0.resid_pre"]
  for layer in range(n_layers):
    sites += [f"blocks.{layer}.resid_mid", f"blocks.{layer}.resid_post"]
  return sites


def check_sites(sites: Sequence[str], n_layers: int) -> tuple[str, ...]:
  """`sites` deduplicated in forward order; JaxsaeError naming each unknown one and the fix."""
  known = bridge_sites(n_layers)
  problems = []
  for site in sites:
    if site in known:
      continue
    m = _SITE_RE.match(str(site))
    if m and m.group(2) == "resid_pre" and 0 < int(m.group(1)) <= n_layers:
      problems.append(
        f'"{site}" (the same activation as "blocks.{int(m.group(1)) - 1}.resid_post"; use that)'
      )
    else:
      problems.append(f'"{site}"')
  if problems:
    raise JaxsaeError(
      f"unknown bridge site(s) {', '.join(problems)}; a {n_layers}-layer model's bridge sites "
      f'are {known} (bridge_sites(n_layers)), or "{ALL_SITES}"'
    )
  if not sites:
    raise JaxsaeError(f'no bridge sites given; pass some of {known} or "{ALL_SITES}"')
  return tuple(s for s in known if s in set(sites))


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
  """How to build and train bridges.

  sites:          "all" (every residual site, `bridge_sites`) or a tuple of site names.
  topk_fraction:  the encoder's AbsTopK keeps round(f * d_sparse) entries per token; None: the
                  sparse model's activation_topk_fraction, or 0.25 if it has none.
  steps:          Adam steps.
  batch_size:     windows per step.
  lr:             Adam learning rate (constant).
  seed:           initialisation and data order.
  init:           "lstsq": each encoder and decoder starts as the ridge least-squares linear map
                  between the two models' residuals on `init_windows` random training windows
                  (AbsTopK ignored); "random": W ~ N(0, 1/d_in), b = 0.
  init_windows:   windows for the "lstsq" fit.
  log_every:      steps between logged training records.
  """

  sites: str | tuple[str, ...] = ALL_SITES
  topk_fraction: float | None = None
  steps: int = 300
  batch_size: int = 8
  lr: float = 1e-3
  seed: int = 0
  init: str = "lstsq"
  init_windows: int = 64
  log_every: int = 10

  def __post_init__(self):
    if not isinstance(self.sites, str):
      object.__setattr__(self, "sites", tuple(self.sites))
    problems = self.problems()
    if problems:
      raise ConfigError(problems)

  def problems(self) -> list[str]:
    """Every invalid field, with its fix."""
    p = []
    if isinstance(self.sites, str):
      if self.sites != ALL_SITES:
        p.append(f'bridge.sites={self.sites!r} must be "{ALL_SITES}" or a tuple of site names')
    elif not self.sites or not all(isinstance(s, str) for s in self.sites):
      p.append(f"bridge.sites={self.sites!r} must be a non-empty tuple of site names")
    f = self.topk_fraction
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1):
      p.append(
        f"bridge.topk_fraction={f!r} must be in (0, 1] (1 keeps every entry), or None for the "
        "sparse model's activation_topk_fraction"
      )
    for name in ("steps", "batch_size", "init_windows", "log_every"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        p.append(f"bridge.{name}={value!r} must be a positive int")
    if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
      p.append(f"bridge.lr={self.lr!r} must be a positive number (e.g. 1e-3)")
    if isinstance(self.seed, bool) or not isinstance(self.seed, int):
      p.append(f"bridge.seed={self.seed!r} must be an int")
    if self.init not in INITS:
      p.append(f"bridge.init={self.init!r} must be one of {INITS}")
    return p

  def resolve_sites(self, n_layers: int) -> tuple[str, ...]:
    sites = bridge_sites(n_layers) if self.sites == ALL_SITES else self.sites
    return check_sites(sites, n_layers)

  def topk_count(self, sparse_config: TransformerConfig) -> int:
    """k of the encoder's AbsTopK: round(f * d_sparse), at least 1."""
    f = self.topk_fraction
    if f is None:
      f = sparse_config.activation_topk_fraction or DEFAULT_TOPK_FRACTION
    return max(1, min(sparse_config.d_model, round(f * sparse_config.d_model)))

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["sites"] = self.sites if isinstance(self.sites, str) else list(self.sites)
    return d

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> BridgeConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(
        [f"unknown bridge config key {k!r}; known: {sorted(known)}" for k in unknown]
      )
    values = dict(values)
    if isinstance(values.get("sites"), list):
      values["sites"] = tuple(values["sites"])
    return cls(**values)
