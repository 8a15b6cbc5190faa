"""Gemma Scope (params.npz) and Gemma Scope 2 (params.safetensors) read by jaxsae against
sae-lens's own loaders on the same files: release ids resolved through sae-lens's table, files
served from a Hugging Face cache laid out as the Hub writes it, offline."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file
from zoo_helpers import go_offline, inputs, jumprelu_weights, ours, peer, repo_snapshot

from jaxsae.errors import CheckpointError
from jaxsae.sae import export, zoo
from jaxsae.sae.zoo import gemma_scope, transcoders

D, N = 8, 32


def _gemma_2_release(tmp_path, monkeypatch, release, sae_id, repo_id, seed=0):
  from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

  go_offline(monkeypatch, tmp_path / "hub")
  folder = get_pretrained_saes_directory()[release].saes_map[sae_id]
  target = repo_snapshot(tmp_path / "hub", repo_id) / folder
  target.mkdir(parents=True)
  t = jumprelu_weights(D, N, seed=seed)
  np.savez(target / "params.npz", **t)
  return t, target / "params.npz"


def _sae_lens_gemma_2(release, sae_id):
  """sae-lens's SAE.from_pretrained on the cached file; only the widths are overridden (its
  config hard-codes Gemma 2's d_model and the width in the folder name)."""
  from sae_lens import SAE
  from sae_lens.loading.pretrained_sae_loaders import gemma_2_sae_huggingface_loader

  def converter(**kwargs):
    kwargs["cfg_overrides"] = {**kwargs["cfg_overrides"], "d_in": D, "d_sae": N}
    return gemma_2_sae_huggingface_loader(**kwargs)

  return SAE.from_pretrained(release, sae_id, converter=converter)


def test_a_gemma_scope_release_id_loads_from_the_cache_and_equals_sae_lens(tmp_path, monkeypatch):
  release, sae_id = "gemma-scope-2b-pt-res-canonical", "layer_3/width_16k/canonical"
  t, npz = _gemma_2_release(tmp_path, monkeypatch, release, sae_id, "google/gemma-scope-2b-pt-res")
  config, variables, meta = export.load(f"saelens:{release}/{sae_id}")
  assert (config.architecture, config.d_in, config.n_latents) == ("jumprelu", D, N)
  assert meta["source_format"] == "gemma_scope" and meta["hook"] == "blocks.3.resid_post"
  assert meta["repo_id"] == "google/gemma-scope-2b-pt-res" and meta["model"] == "gemma-2-2b"
  x = inputs(D)
  z, x_hat = ours(config, variables, x)
  z_ref, x_ref = peer(_sae_lens_gemma_2(release, sae_id), x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(x_hat, x_ref, atol=1e-5, rtol=1e-5)
  # The published formula, no b_dec subtraction: z = pre·1[pre > θ], pre = x W_enc + b_enc.
  pre = x @ t["W_enc"] + t["b_enc"]
  np.testing.assert_allclose(z, pre * (pre > t["threshold"]), atol=1e-5, rtol=1e-5)
  # The file or its folder, given directly, reads the same (the hook from the cache's repo name).
  for path in (npz, npz.parent):
    _, again, meta = export.load(path)
    np.testing.assert_array_equal(again["params"]["b_enc"], variables["params"]["b_enc"])
    assert meta["hook"] == "blocks.3.resid_post"


def test_an_embedding_sae_is_rescaled_exactly_where_sae_lens_forgets_b_dec(tmp_path, monkeypatch):
  """Trained on the unscaled embedding e, read on embed.tok = √d·e: latents as sae-lens gives
  them; reconstructions √d times the published ones (sae-lens leaves b_dec unscaled)."""
  release, sae_id = "gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6"
  t, _ = _gemma_2_release(tmp_path, monkeypatch, release, sae_id, "google/gemma-scope-2b-pt-res")
  config, variables, meta = export.load(f"saelens:{release}/{sae_id}")
  assert meta["hook"] == "embed.tok"
  scaled = inputs(D) * np.sqrt(D)
  z, x_hat = ours(config, variables, scaled)
  z_ref, x_ref = peer(_sae_lens_gemma_2(release, sae_id), scaled)
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(
    x_hat - x_ref, np.broadcast_to((np.sqrt(D) - 1) * t["b_dec"], x_hat.shape), atol=1e-4
  )
  pre = scaled / np.sqrt(D) @ t["W_enc"] + t["b_enc"]
  published = (pre * (pre > t["threshold"])) @ t["W_dec"] + t["b_dec"]
  np.testing.assert_allclose(x_hat, np.sqrt(D) * published, atol=1e-4, rtol=1e-5)


def test_an_npz_needing_pickle_is_refused(tmp_path):
  np.savez(tmp_path / "params.npz", W_enc=np.array([{"a": 1}], dtype=object))
  with pytest.raises(CheckpointError, match="not a readable npz of plain arrays"):
    export.load(tmp_path / "params.npz")


def _shapes_from(local_root):
  """sae-lens reads safetensors headers over HTTP; read the cached file's header instead."""
  from safetensors import safe_open

  def shapes(repo_id, filename):
    with safe_open(str(local_root / filename), "np") as f:
      return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118

  return shapes


def _gemma_3(tmp_path, monkeypatch, release, sae_id, t=None, config_json=None):
  """The release's folder in an offline Hub cache, with params `t` (None: written later)."""
  from sae_lens.loading import pretrained_sae_loaders as loaders
  from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

  go_offline(monkeypatch, tmp_path / "hub")
  entry = get_pretrained_saes_directory()[release]
  root = repo_snapshot(tmp_path / "hub", entry.repo_id)
  folder = root / entry.saes_map[sae_id]
  folder.mkdir(parents=True)
  if t is not None:
    save_file(t, str(folder / "params.safetensors"))
  if config_json is not None:
    (folder / "config.json").write_text(json.dumps(config_json))
  monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", _shapes_from(root))
  return folder


@pytest.mark.parametrize(
  "release, sae_id, hook",
  [
    ("gemma-scope-2-270m-pt-res-all", "layer_9_width_16k_l0_small", "blocks.9.resid_post"),
    ("gemma-scope-2-270m-pt-mlp", "layer_12_width_16k_l0_big", "blocks.12.mlp.out"),
    ("gemma-scope-2-270m-pt-att-all", "layer_0_width_16k_l0_big", "blocks.0.attn.z"),
  ],
)
def test_gemma_scope_2_saes_equal_sae_lens_and_name_their_hook(
  release, sae_id, hook, tmp_path, monkeypatch
):
  from sae_lens import SAE

  t = jumprelu_weights(D, N, names=("w_enc", "w_dec"), seed=3)
  _gemma_3(tmp_path, monkeypatch, release, sae_id, t)
  config, variables, meta = export.load(f"saelens:{release}/{sae_id}")
  assert meta["source_format"] == "gemma_scope_2" and meta["hook"] == hook
  x = inputs(D, seed=4)
  z, x_hat = ours(config, variables, x)
  z_ref, x_ref = peer(SAE.from_pretrained(release, sae_id), x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(x_hat, x_ref, atol=1e-5, rtol=1e-5)


def test_a_gemma_scope_2_folder_takes_its_hook_from_config_json(tmp_path):
  folder = tmp_path / "whatever" / "sae"
  folder.mkdir(parents=True)
  save_file(jumprelu_weights(D, N, names=("w_enc", "w_dec")), str(folder / "params.safetensors"))
  (folder / "config.json").write_text(
    json.dumps({"hf_hook_point_in": "model.layers.5.output", "model_name": "gemma-v3-1b-pt"})
  )
  _, _, meta = export.load(folder)
  assert meta["hook"] == "blocks.5.resid_post" and meta["model"] == "gemma-v3-1b-pt"


@pytest.mark.parametrize("affine", [False, True])
def test_gemma_scope_2_transcoders_equal_sae_lens_and_are_refused_by_export_load(
  affine, tmp_path, monkeypatch
):
  from sae_lens import SAE

  release = "gemma-scope-2-270m-pt-transcoders-all"
  sae_id = "layer_0_width_16k_l0_big" + ("_affine" if affine else "")
  t = jumprelu_weights(D, N, d_out=D, names=("w_enc", "w_dec"), seed=5, skip=affine)
  folder = _gemma_3(tmp_path, monkeypatch, release, sae_id, t)
  with pytest.raises(CheckpointError, match="transcoder.*jaxsae.sae.zoo.load_transcoder"):
    export.load(folder)
  tc = zoo.load_transcoder(f"saelens:{release}/{sae_id}")
  assert (tc.input_hook, tc.output_hook) == ("blocks.0.mlp.in", "blocks.0.mlp.out")
  assert (tc.W_skip is not None) == affine
  x = inputs(D, seed=6)
  z = transcoders.encode(tc, x)
  y = transcoders.decode(tc, z, x)
  z_ref, y_ref = peer(SAE.from_pretrained(release, sae_id), x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)


def test_gemma_scope_transcoder_npz_equals_sae_lens(tmp_path, monkeypatch):
  from sae_lens import SAE
  from sae_lens.loading.pretrained_sae_loaders import gemma_2_transcoder_huggingface_loader
  from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

  release, repo_id = "gemma-scope-2b-pt-transcoders", "google/gemma-scope-2b-pt-transcoders"
  sae_id = next(iter(get_pretrained_saes_directory()[release].saes_map))
  _gemma_2_release(tmp_path, monkeypatch, release, sae_id, repo_id)
  tc = zoo.load_transcoder(f"saelens:{release}/{sae_id}")
  layer = int(sae_id.split("/")[0].removeprefix("layer_"))
  assert (tc.input_hook, tc.output_hook) == (f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out")

  def converter(**kwargs):
    kwargs["cfg_overrides"] = {**kwargs["cfg_overrides"], "d_in": D, "d_out": D, "d_sae": N}
    return gemma_2_transcoder_huggingface_loader(**kwargs)

  x = inputs(D, seed=7)
  z = transcoders.encode(tc, x)
  z_ref, y_ref = peer(SAE.from_pretrained(release, sae_id, converter=converter), x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(transcoders.decode(tc, z), y_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("activation, skip", [("jumprelu", True), ("relu", False)])
def test_transcoders_jaxsae_writes_in_gemma_scope_2s_layout_are_what_sae_lens_reads(
  activation, skip, tmp_path, monkeypatch
):
  from sae_lens import SAE

  t = jumprelu_weights(D, N, d_out=D, seed=7, skip=skip)
  tc = transcoders.Transcoder(
    W_enc=t["W_enc"],
    b_enc=t["b_enc"],
    W_dec=t["W_dec"],
    b_dec=t["b_dec"],
    activation=activation,
    threshold=t["threshold"] if activation == "jumprelu" else None,
    W_skip=t.get("affine_skip_connection"),
    input_hook="blocks.0.mlp.in",
    output_hook="blocks.0.mlp.out",
  )
  release = "gemma-scope-2-270m-pt-transcoders-all"
  sae_id = "layer_0_width_16k_l0_big" + ("_affine" if skip else "")
  folder = _gemma_3(tmp_path, monkeypatch, release, sae_id)
  gemma_scope.write_transcoder(folder, tc, model_name="gemma-3-270m")
  config = json.loads((folder / "config.json").read_text())
  assert config["hf_hook_point_in"] == "model.layers.0.pre_feedforward_layernorm.output"
  assert config["hf_hook_point_out"] == "model.layers.0.post_feedforward_layernorm.output"
  x = inputs(D, seed=8)
  z = transcoders.encode(tc, x)
  y = transcoders.decode(tc, z, x)
  assert 0 < (z != 0).mean() < 1
  z_ref, y_ref = peer(SAE.from_pretrained(release, sae_id), x)
  np.testing.assert_allclose(z_ref, z, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(y_ref, y, atol=1e-5, rtol=1e-5)
  back = zoo.load_transcoder(folder)
  assert (back.input_hook, back.output_hook) == (tc.input_hook, tc.output_hook)
  np.testing.assert_allclose(transcoders.decode(back, transcoders.encode(back, x), x), y, atol=1e-5)


def test_a_clt_in_gemma_scope_2s_layout_reads_back_and_topk_is_refused(tmp_path):
  rng = np.random.default_rng(9)
  L = 3
  clt = transcoders.CrossLayerTranscoder(
    W_enc=rng.normal(size=(L, D, N)).astype(np.float32) * 0.5,
    b_enc=rng.normal(size=(L, N)).astype(np.float32) * 0.3,
    W_dec=tuple(rng.normal(size=(N, L - i, D)).astype(np.float32) for i in range(L)),
    b_dec=rng.normal(size=(L, D)).astype(np.float32),
    activation="relu",
  )
  folder = gemma_scope.write_clt(tmp_path / "clt" / "width_16k_l0_small", clt)
  back = zoo.load_transcoder(folder)
  assert back.metadata["source_format"] == "gemma_scope_2_clt" and back.activation == "jumprelu"
  x = np.stack([inputs(D, rows=16, seed=10 + i) for i in range(L)])
  z = transcoders.clt_encode(clt, x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(transcoders.clt_encode(back, x), z, atol=1e-5)
  np.testing.assert_allclose(
    transcoders.clt_decode(back, z, x), transcoders.clt_decode(clt, z, x), atol=1e-4
  )
  t = jumprelu_weights(D, N, seed=11)
  topk = transcoders.Transcoder(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], "topk", k=4)
  with pytest.raises(CheckpointError, match="JumpReLU.*'topk'.*circuit_tracer"):
    gemma_scope.write_transcoder(tmp_path / "topk", topk)
