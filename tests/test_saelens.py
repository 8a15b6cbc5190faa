"""SAELens format: our export, import back, and the real sae-lens package on the same inputs."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import CheckpointError
from jaxsae.sae import registry, saelens
from jaxsae.sae.config import SAEConfig

ARCHITECTURES = ["relu", "topk", "batchtopk", "gated", "jumprelu", "prolu_relu", "prolu_ste"]
D, N = 8, 32


def trained_like(architecture, seed=0):
  """An SAE with every parameter perturbed away from its init (a stand-in for training)."""
  config = SAEConfig(architecture, d_in=D, n_latents=N, k=4)
  sae = registry.build(config)
  variables = nn.meta.unbox(sae.init(jax.random.key(seed), jnp.zeros((1, D))))
  keys = iter(jax.random.split(jax.random.key(seed + 1), 10))
  variables["params"] = {
    k: v + 0.2 * jax.random.normal(next(keys), v.shape) for k, v in variables["params"].items()
  }
  if "threshold" in variables["params"]:
    variables["params"]["threshold"] = jnp.abs(variables["params"]["threshold"]) + 0.1
  if "buffers" in variables:
    variables["buffers"] = {"threshold": jnp.asarray(0.3)}
  return config, sae, variables


def ours(config, sae, variables, x_raw, scale):
  """Our latents and reconstruction on raw inputs (inference mode)."""
  z = sae.apply(variables, x_raw * scale, method="encode").latents
  return np.asarray(z), np.asarray(sae.apply(variables, z, method="decode") / scale)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.slow
def test_export_then_import_keeps_latents_and_reconstructions(architecture, tmp_path):
  config, sae, variables = trained_like(architecture)
  x = np.asarray(jax.random.normal(jax.random.key(5), (64, D)) * 3.0)
  scale = 0.6
  saelens.save(tmp_path, config, variables, scale, {"hook_name": "blocks.1.resid_post"})
  cfg = json.loads((tmp_path / "cfg.json").read_text())
  assert cfg["metadata"]["hook_name"] == "blocks.1.resid_post"
  back_config, back = saelens.load(tmp_path)
  back_sae = registry.build(back_config)
  z_ref, x_ref = ours(config, sae, variables, x, scale)
  z_back = np.asarray(back_sae.apply(back, jnp.asarray(x), method="encode").latents)
  x_back = np.asarray(back_sae.apply(back, jnp.asarray(z_back), method="decode"))
  assert (z_ref != 0).sum() > 0
  np.testing.assert_allclose(z_back, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(x_back, x_ref, atol=1e-5, rtol=1e-5)


def test_import_folds_an_uncentered_encoder_and_refuses_bad_folders(tmp_path):
  config, sae, variables = trained_like("relu")
  saelens.save(tmp_path, config, variables, 1.0)
  cfg = json.loads((tmp_path / "cfg.json").read_text())
  from safetensors.numpy import load_file, save_file

  t = load_file(str(tmp_path / "sae_weights.safetensors"))
  t["b_enc"] = t["b_enc"] - t["b_dec"] @ t["W_enc"]  # The same SAE without input centering.
  save_file(t, str(tmp_path / "sae_weights.safetensors"))
  cfg["apply_b_dec_to_input"] = False
  (tmp_path / "cfg.json").write_text(json.dumps(cfg))
  back_config, back = saelens.load(tmp_path)
  x = jax.random.normal(jax.random.key(3), (16, D))
  np.testing.assert_allclose(
    registry.build(back_config).apply(back, x), sae.apply(variables, x), atol=1e-5
  )
  cfg["normalize_activations"] = "layer_norm"  # Per token: no weights hold it.
  (tmp_path / "cfg.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match="normalize_activations='layer_norm'"):
    saelens.load(tmp_path)
  with pytest.raises(CheckpointError, match="missing"):
    saelens.load(tmp_path / "nowhere")
