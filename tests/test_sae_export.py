"""Exported SAEs: the input scale folded in, outputs equal on raw activations, bad files refused."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import CheckpointError
from jaxsae.sae import export, registry
from jaxsae.sae.config import SAEConfig


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "gated", "prolu_ste", "jumprelu"])
@pytest.mark.slow
def test_folding_the_scale_gives_the_same_sae_on_raw_activations(architecture, tmp_path):
  config = SAEConfig(architecture, d_in=8, n_latents=32, k=4)
  sae = registry.build(config)
  raw = jax.random.normal(jax.random.key(0), (16, 8)) * 7.0
  scale = 0.37
  variables = nn.meta.unbox(sae.init(jax.random.key(1), raw))
  keys = iter(jax.random.split(jax.random.key(2), 10))
  variables["params"] = {
    k: v + 0.1 * jax.random.normal(next(keys), v.shape) for k, v in variables["params"].items()
  }
  if "buffers" in variables:
    variables["buffers"] = {"threshold": jnp.asarray(0.5)}
  export.save(tmp_path / "sae", config, variables, scale, {"note": "test"})
  loaded_config, loaded, metadata = export.load(tmp_path / "sae")
  assert loaded_config == config and metadata["folded_scale"] == scale
  assert metadata["note"] == "test"
  z_scaled = sae.apply(variables, raw * scale, method="encode").latents
  z_raw = sae.apply(loaded, raw, method="encode").latents
  np.testing.assert_allclose(z_raw, z_scaled, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
    sae.apply(loaded, raw), sae.apply(variables, raw * scale) / scale, rtol=1e-4, atol=1e-5
  )


def test_load_refuses_missing_corrupt_and_mismatched_files(tmp_path):
  with pytest.raises(CheckpointError, match="missing"):
    export.load(tmp_path / "nowhere")
  config = SAEConfig("topk", d_in=8, n_latents=32, k=4)
  sae = registry.build(config)
  variables = nn.meta.unbox(sae.init(jax.random.key(1), jnp.zeros((1, 8))))
  path = export.save(tmp_path / "sae", config, variables, 1.0)
  doc = json.loads((path / "config.json").read_text())
  doc["sae"]["n_latents"] = 64
  (path / "config.json").write_text(json.dumps(doc))
  with pytest.raises(CheckpointError, match="W_dec has shape \\(32, 8\\), the config implies"):
    export.load(path)
  doc["format"] = "something-else/9"
  (path / "config.json").write_text(json.dumps(doc))
  with pytest.raises(CheckpointError, match="format"):
    export.load(path)
  (path / "sae.safetensors").write_bytes(b"\x00" * 40)
  doc["format"] = export.FORMAT
  doc["sae"]["n_latents"] = 32
  (path / "config.json").write_text(json.dumps(doc))
  with pytest.raises(CheckpointError, match="not a readable safetensors"):
    export.load(path)
