"""Shared by the SAE tests: a dictionary with perturbed parameters (test_sae_architectures,
test_sae_transcoder) and a tiny training config (test_sae_train, test_transcoder_train)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsae.sae import registry, train_config
from jaxsae.sae.config import SAEConfig


def perturbed_dictionary(architecture: str, *, d_in: int, n_latents: int, batch: int, **fields):
  """(module, variables, x): an SAE or transcoder whose parameters are perturbed from their init
  (so that no bias or skip weight is trivially zero) and x, a (batch, d_in) normal batch. k = 4
  and λ = 0.3 unless `fields` say otherwise."""
  defaults = dict(architecture=architecture, d_in=d_in, n_latents=n_latents, k=4)
  cfg = SAEConfig(**{**defaults, "sparsity_coefficient": 0.3, **fields})
  sae = registry.build(cfg)
  x = jax.random.normal(jax.random.key(0), (batch, d_in))
  variables = nn.meta.unbox(sae.init(jax.random.key(1), x))
  keys = iter(jax.random.split(jax.random.key(2), 16))
  params = {
    name: (value + 0.1 * jax.random.normal(next(keys), value.shape)).astype(jnp.float32)
    for name, value in variables["params"].items()
  }
  if "threshold" in params:  # JumpReLU: a positive threshold, so some latents are cut.
    params["threshold"] = jnp.abs(params["threshold"]) + 0.2
  return sae, {**variables, "params": params}, x


def tiny_train_config(**overrides):
  """The SAE trainer's config for a few CPU steps (64 latents, k 4, batches of 128, a short dead
  window so AuxK and the dead counters are exercised); overrides as {"group.field": value}."""
  c = train_config.base_config()
  c.sae.n_latents = 64
  c.sae.k = 4
  c.train.batch_size = 128
  c.train.steps = 12
  c.train.log_every = 4
  c.train.checkpoint_every = 1000
  c.train.dead_window_tokens = 512
  c.optim.warmup_steps = 2
  c.optim.lr = 3e-3
  c.data.normalization_samples = 2048
  c.data.b_dec_samples = 512
  for key, value in overrides.items():
    group, field = key.split(".")
    c[group][field] = value
  return c
