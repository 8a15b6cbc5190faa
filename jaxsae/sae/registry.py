"""Architecture names (the config string) → SAE classes. A new architecture is one file + a line."""

from __future__ import annotations

from jaxsae.errors import ConfigError


def _classes() -> dict[str, type]:
  from jaxsae.sae.batchtopk import BatchTopKSAE
  from jaxsae.sae.gated import GatedSAE
  from jaxsae.sae.jumprelu import JumpReLUSAE
  from jaxsae.sae.prolu import ProLUSAE, ProLUSTESAE
  from jaxsae.sae.relu import ReLUSAE
  from jaxsae.sae.topk import TopKSAE

  return {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "gated": GatedSAE,
    "prolu_relu": ProLUSAE,
    "prolu_ste": ProLUSTESAE,
    "jumprelu": JumpReLUSAE,
  }


def names() -> tuple[str, ...]:
  return tuple(_classes())


def get(name: str) -> type:
  classes = _classes()
  if name not in classes:
    raise ConfigError([f"unknown SAE architecture {name!r}; choose one of {sorted(classes)}"])
  return classes[name]


def build(config, axes=None):
  """The SAE module for `config` (an SAEConfig), optionally with mesh axes (inside shard_map)."""
  cls = get(config.architecture)
  return cls(config) if axes is None else cls(config, axes)
