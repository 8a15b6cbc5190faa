"""jaxsae transcoders as zoo records and circuit-tracer layer files: encode and decode on raw
activations equal the trained module's on scaled ones, both ways."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import CheckpointError
from jaxsae.sae import registry, transcoder_format
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.zoo import circuit_tracer, transcoders

D, D_OUT, N = 8, 6, 32
SCALE, TARGET_SCALE = 2.5, 0.4


def trained(architecture, transcode=True, skip=True):
  """A module and perturbed parameters, as if trained on SCALE·x → TARGET_SCALE·y."""
  d_out = D_OUT if transcode else -1
  cfg = SAEConfig(
    architecture=architecture, d_in=D, n_latents=N, k=4, d_out=d_out, transcode=transcode, skip=skip
  )
  sae = registry.build(cfg)
  x = jax.random.normal(jax.random.key(0), (64, D))
  variables = nn.meta.unbox(sae.init(jax.random.key(1), x))
  keys = iter(jax.random.split(jax.random.key(2), 16))
  params = {
    k: v + 0.3 * jax.random.normal(next(keys), v.shape) for k, v in variables["params"].items()
  }
  if "threshold" in params:
    params["threshold"] = jnp.abs(params["threshold"]) + 0.2
  variables = {**variables, "params": params}
  if "buffers" in variables:
    variables["buffers"] = {"threshold": jnp.asarray(0.25)}
  return cfg, variables, np.asarray(x) / SCALE  # Raw inputs.


def ours(cfg, variables, x_raw, target_scale=TARGET_SCALE):
  """(z, ŷ in raw units) of the module trained on scaled activations."""
  sae = registry.build(cfg)
  x = jnp.asarray(x_raw) * SCALE
  z = sae.apply(variables, x, method="encode").latents
  return np.asarray(z), np.asarray(sae.apply(variables, z, x, method="decode")) / target_scale


def theirs(tc, x_raw):
  z = transcoders.encode(tc, x_raw)
  return z, transcoders.decode(tc, z, x_raw)


def assert_same(a, b):
  np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("architecture", ["relu", "jumprelu", "batchtopk", "topk"])
def test_records_compute_the_trained_transcoder_on_raw_activations(architecture, tmp_path):
  cfg, variables, x = trained(architecture)
  tc = transcoder_format.to_record(cfg, variables, SCALE, TARGET_SCALE)
  assert tc.W_skip.shape == (D, D_OUT)
  assert_same(theirs(tc, x), ours(cfg, variables, x))
  # Back into a jaxsae module acting on raw activations.
  back_cfg, back = transcoder_format.from_record(tc)
  sae = registry.build(back_cfg)
  z = np.asarray(sae.apply(back, x, method="encode").latents)
  assert_same((z, np.asarray(sae.apply(back, x))), ours(cfg, variables, x))


@pytest.mark.parametrize("architecture", ["relu", "jumprelu", "batchtopk"])
def test_circuit_tracer_layer_files_read_back_equal_ours(architecture, tmp_path):
  cfg, variables, x = trained(architecture)
  tc = transcoder_format.to_record(
    cfg,
    variables,
    SCALE,
    TARGET_SCALE,
    input_hook="blocks.0.mlp.in",
    output_hook="blocks.0.mlp.out",
  )
  folder = circuit_tracer.write_set(tmp_path / "set", {0: tc}, model_name="tiny")
  read = circuit_tracer.read_layer(folder / "layer_0.safetensors")
  assert (read.input_hook, read.output_hook) == ("blocks.0.mlp.in", "blocks.0.mlp.out")
  assert_same(theirs(read, x), ours(cfg, variables, x))


def test_topk_goes_to_circuit_tracer_without_its_relu(tmp_path):
  cfg, variables, x = trained("topk")
  with pytest.raises(CheckpointError, match="relu_topk"):
    circuit_tracer.write_layer(
      tmp_path / "layer_0.safetensors", transcoder_format.to_record(cfg, variables, SCALE)
    )
  tc = transcoder_format.to_record(cfg, variables, SCALE, TARGET_SCALE, relu_topk=False)
  read = circuit_tracer.read_layer(circuit_tracer.write_layer(tmp_path / "layer_0.safetensors", tc))
  z_ours, y_ours = ours(cfg, variables, x)
  z, y = theirs(read, x)
  kth_positive = np.sort(x @ read.W_enc + read.b_enc, -1)[:, -4] > 0
  assert kth_positive.sum() > len(x) // 2
  np.testing.assert_allclose(z[kth_positive], z_ours[kth_positive], atol=1e-4)
  np.testing.assert_allclose(y[kth_positive], y_ours[kth_positive], rtol=1e-4, atol=1e-4)
  with pytest.raises(CheckpointError, match="no jaxsae"):
    transcoder_format.from_record(read)


def test_an_sae_becomes_a_record_with_its_centering_in_b_enc():
  cfg, variables, x = trained("topk", transcode=False, skip=False)
  tc = transcoder_format.to_record(cfg, variables, SCALE)
  assert_same(theirs(tc, x), ours(cfg, variables, x, target_scale=SCALE))


def test_gated_has_no_record():
  cfg = SAEConfig(architecture="gated", d_in=D, n_latents=N)
  with pytest.raises(CheckpointError, match="no transcoder-record"):
    transcoder_format.to_record(cfg, {"params": {}})
