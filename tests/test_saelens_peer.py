"""Against the real sae-lens package (installed with the test extra, CPU PyTorch): our SAELens
export loads there and encodes/decodes like ours, and SAEs saved by sae-lens load here."""

import jax
import numpy as np
import pytest
import torch
from sae_lens import (
  SAE,
  GatedSAE,
  GatedSAEConfig,
  JumpReLUSAE,
  JumpReLUSAEConfig,
  StandardSAE,
  StandardSAEConfig,
  TopKSAE,
  TopKSAEConfig,
)
from test_saelens import ARCHITECTURES, D, N, ours, trained_like

from jaxsae.sae import registry, saelens


def _peer(x, peer):
  with torch.no_grad():
    z = peer.encode(torch.tensor(x))
    return z.numpy(), peer.decode(z).numpy()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sae_lens_loads_our_export_and_agrees(architecture, tmp_path):
  config, sae, variables = trained_like(architecture)
  saelens.save(tmp_path, config, variables, 0.6, {"hook_name": "blocks.1.resid_post"})
  peer = SAE.load_from_disk(str(tmp_path))
  x = np.asarray(jax.random.normal(jax.random.key(5), (64, D)) * 3.0, np.float32)
  z_ref, x_ref = ours(config, sae, variables, x, 0.6)
  z, x_hat = _peer(x, peer)
  assert (z_ref != 0).any()
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(x_hat, x_ref, atol=1e-5, rtol=1e-5)


PEERS = {
  "standard": (StandardSAE, StandardSAEConfig, {}),
  "topk": (TopKSAE, TopKSAEConfig, {"k": 4}),
  "gated": (GatedSAE, GatedSAEConfig, {}),
  "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
}


@pytest.mark.parametrize("kind", sorted(PEERS))
def test_saes_saved_by_sae_lens_load_here_and_agree(kind, tmp_path):
  cls, cfg_cls, extra = PEERS[kind]
  torch.manual_seed(0)
  peer = cls(cfg_cls(d_in=D, d_sae=N, **extra))
  with torch.no_grad():
    for name, p in peer.named_parameters():
      p.copy_(torch.randn_like(p) * 0.3 + (0.2 if name == "threshold" else 0.0))
      if name == "threshold":
        p.abs_()
  peer.save_model(str(tmp_path))
  config, variables = saelens.load(tmp_path)
  sae = registry.build(config)
  x = np.asarray(jax.random.normal(jax.random.key(7), (64, D)) * 2.0, np.float32)
  z_ref, x_ref = _peer(x, peer)
  z = np.asarray(sae.apply(variables, x, method="encode").latents)
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(sae.apply(variables, x)), x_ref, atol=1e-5, rtol=1e-5)


def test_negative_jumprelu_thresholds_encode_as_in_sae_lens(tmp_path):
  """sae-lens applies ReLU before the threshold mask, so a latent whose threshold is negative
  never outputs a negative value; jaxsae's z = pre·1[pre > θ] alone would."""
  torch.manual_seed(1)
  peer = JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=N))
  with torch.no_grad():
    for p in peer.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
    peer.threshold.copy_(-peer.threshold.abs() - 0.05)  # Every threshold below zero.
  peer.save_model(str(tmp_path))
  config, variables = saelens.load(tmp_path)
  x = np.asarray(jax.random.normal(jax.random.key(8), (64, D)) * 2.0, np.float32)
  z_ref, x_ref = _peer(x, peer)
  sae = registry.build(config)
  z = np.asarray(sae.apply(variables, x, method="encode").latents)
  pre = np.asarray(sae.apply(variables, x, method="encode").pre)
  assert ((pre < 0) & (pre > -0.05)).any()  # Pre-activations a bare mask would let through.
  assert z.min() >= 0
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(sae.apply(variables, x)), x_ref, atol=1e-5, rtol=1e-5)
