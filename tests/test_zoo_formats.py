"""The one loader's dispatch: release ids resolved through sae-lens's installed table, the
offline error, pickle files refused unread, SAELens and sparsify folders (and a sparsify
checkpoint's hookpoint choice) equal to sae-lens's and sparsify's own loaders."""

import json

import numpy as np
import pytest
import torch
from zoo_helpers import go_offline, inputs, ours, peer, repo_snapshot

from jaxsae.errors import CheckpointError
from jaxsae.sae import export, zoo
from jaxsae.sae.zoo import resolve, transcoders


@pytest.mark.parametrize(
  "text, repo_id, files, conversion",
  [
    (
      "saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical",
      "google/gemma-scope-2b-pt-res",
      ["layer_20/width_16k/average_l0_71/params.npz"],
      "gemma_2",
    ),
    (
      "saelens:gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_big",
      "google/gemma-scope-2-270m-pt",
      ["resid_post/layer_12_width_16k_l0_big/params.safetensors"],
      "gemma_3",
    ),
    (
      "saelens:gpt2-small-res-jb/blocks.0.hook_resid_pre",
      "jbloom/GPT2-Small-SAEs-Reformatted",
      ["blocks.0.hook_resid_pre/cfg.json", "blocks.0.hook_resid_pre/sae_weights.safetensors"],
      None,
    ),
    (
      "saelens:mwhanna-qwen3-4b-transcoders/layer_0",
      "mwhanna/qwen3-4b-transcoders",
      ["layer_0.safetensors"],
      "mwhanna_transcoder",
    ),
  ],
)
def test_release_ids_resolve_through_sae_lens_table(text, repo_id, files, conversion):
  release = resolve.lookup(text)
  assert (release.repo_id, release.files(), release.conversion) == (repo_id, files, conversion)


def test_bad_release_ids_say_what_exists_or_how_to_convert():
  with pytest.raises(CheckpointError, match="did you mean.*gemma-scope-2b-pt-res-canonical"):
    resolve.lookup("saelens:gemma-scope-2b-pt-res-canonicle/layer_20/width_16k/canonical")
  with pytest.raises(CheckpointError, match="no SAE id 'layer_99'"):
    resolve.lookup("saelens:gemma-scope-2b-pt-res-canonical/layer_99")
  with pytest.raises(CheckpointError, match="saelens:RELEASE/SAE_ID"):
    resolve.lookup("saelens:gpt2-small-res-jb")
  with pytest.raises(CheckpointError, match=r"'llama_scope' format.*save_model\('FOLDER'\)"):
    resolve.lookup("saelens:llama_scope_lxr_8x/l0r_8x")


def test_offline_without_the_files_raises_one_error_naming_the_repo_and_the_download(
  tmp_path, monkeypatch
):
  go_offline(monkeypatch, tmp_path / "empty")
  with pytest.raises(CheckpointError) as info:
    export.load("saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical")
  message = str(info.value)
  assert "google/gemma-scope-2b-pt-res / layer_20/width_16k/average_l0_71" in message
  assert "HF_HUB_OFFLINE is set" in message and str(tmp_path / "empty") in message
  expected = (
    "hf download google/gemma-scope-2b-pt-res 'layer_20/width_16k/average_l0_71/params.npz'"
  )
  assert expected in message and "--local-dir" in message


@pytest.mark.parametrize("name", ["sae.pt", "weights.pth", "pytorch_model.bin", "last.ckpt"])
def test_pickle_files_are_refused_unread_with_the_conversion(name, tmp_path, monkeypatch):
  import pickle

  def never(*args, **kwargs):
    raise AssertionError("unpickled")

  monkeypatch.setattr(pickle, "load", never)
  monkeypatch.setattr(torch, "load", never)
  (tmp_path / name).write_bytes(b"\x80\x04 not really a pickle")
  for path in (tmp_path / name, tmp_path):
    with pytest.raises(CheckpointError, match="never unpickles") as info:
      export.load(path)
    assert f"torch.load('{tmp_path / name}', weights_only=True)" in str(info.value)
    assert "s.save_file(" in str(info.value)


def test_saelens_folders_and_cached_releases_equal_sae_lens_and_name_their_hook(
  tmp_path, monkeypatch
):
  from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig
  from sae_lens.saes.sae import SAEMetadata

  torch.manual_seed(0)
  theirs = JumpReLUSAE(
    JumpReLUSAEConfig(d_in=8, d_sae=32, metadata=SAEMetadata(hook_name="blocks.2.hook_resid_pre"))
  )
  with torch.no_grad():
    for p in theirs.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
    theirs.threshold.abs_()
  go_offline(monkeypatch, tmp_path / "hub")
  folder = repo_snapshot(tmp_path / "hub", "jbloom/GPT2-Small-SAEs-Reformatted")
  theirs.save_model(str(folder / "blocks.2.hook_resid_pre"))
  x = inputs(8)
  for source in (
    folder / "blocks.2.hook_resid_pre",
    "saelens:gpt2-small-res-jb/blocks.2.hook_resid_pre",
  ):
    config, variables, meta = export.load(source)
    assert meta["source_format"] == "saelens" and meta["hook"] == "blocks.2.resid_pre"
    z, x_hat = ours(config, variables, x)
    z_ref, x_ref = peer(SAE.load_from_disk(folder / "blocks.2.hook_resid_pre"), x)
    assert 0 < (z != 0).mean() < 1
    np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(x_hat, x_ref, atol=1e-5, rtol=1e-5)
  assert meta["repo_id"] == "jbloom/GPT2-Small-SAEs-Reformatted" and meta["model"] == "gpt2-small"


@pytest.mark.parametrize("skip", [False, True])
def test_sae_lens_transcoder_folders_read_as_transcoders_and_equal_sae_lens(skip, tmp_path):
  from sae_lens import SAE
  from sae_lens.saes.sae import SAEMetadata
  from sae_lens.saes.transcoder import (
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
  )

  cls, cfg_cls = (
    (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig)
    if skip
    else (JumpReLUTranscoder, JumpReLUTranscoderConfig)
  )
  meta = SAEMetadata(
    hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out"
  )
  torch.manual_seed(0)
  theirs = cls(cfg_cls(d_in=8, d_out=6, d_sae=32, apply_b_dec_to_input=False, metadata=meta))
  with torch.no_grad():
    for p in theirs.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
    theirs.threshold.copy_(theirs.threshold - 0.1)  # Some below zero: ReLU first in sae-lens.
  theirs.save_model(str(tmp_path))
  with pytest.raises(CheckpointError, match="saelens_transcoder.*load_transcoder"):
    export.load(tmp_path)
  tc = zoo.load_transcoder(tmp_path)
  assert (tc.input_hook, tc.output_hook) == ("blocks.1.mlp.in", "blocks.1.mlp.out")
  assert (tc.d_in, tc.d_out, tc.W_skip is not None) == (8, 6, skip)
  x = inputs(8)
  z = transcoders.encode(tc, x)
  z_ref, y_ref = peer(SAE.load_from_disk(tmp_path), x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(transcoders.decode(tc, z, x), y_ref, atol=1e-5, rtol=1e-5)


def test_a_sparsify_checkpoint_needs_its_hookpoint_chosen_and_equals_sparsify(tmp_path):
  from sparsify.config import SparseCoderConfig
  from sparsify.sparse_coder import SparseCoder

  torch.manual_seed(0)
  for name in ("layers.1", "layers.3.mlp"):
    coder = SparseCoder(8, SparseCoderConfig(num_latents=32, k=4))
    with torch.no_grad():
      coder.encoder.bias.normal_()
      coder.b_dec.normal_()
    coder.save_to_disk(tmp_path / "run" / name)
  with pytest.raises(
    CheckpointError, match=r"several hookpoints; choose one of \['layers.1', 'layers.3.mlp'\]"
  ):
    export.load(tmp_path / "run")
  with pytest.raises(CheckpointError, match="has no hookpoint 'layers.2'"):
    export.load(f"{tmp_path / 'run'}:layers.2")
  with pytest.raises(CheckpointError, match=r"holds one dictionary \(sparsify\); drop ':x'"):
    export.load(f"{tmp_path / 'run' / 'layers.1'}:x")
  x = inputs(8)
  for name, hook in (("layers.1", "blocks.1.resid_post"), ("layers.3.mlp", None)):
    config, variables, meta = export.load(f"{tmp_path / 'run'}:{name}")
    assert (meta["source_format"], meta["hook"], meta["hookpoint"]) == ("sparsify", hook, name)
    _, x_hat = ours(config, variables, x)
    with torch.no_grad():
      x_ref = SparseCoder.load_from_disk(tmp_path / "run" / name)(torch.from_numpy(x)).sae_out
    np.testing.assert_allclose(x_hat, x_ref.numpy(), atol=1e-5, rtol=1e-5)


def test_jaxsae_folders_keep_their_metadata_and_gain_the_source_format():
  config, _, meta = export.load("default")
  assert meta["source_format"] == "jaxsae" and meta["hook"] == "blocks.1.resid_post"
  assert config.architecture == "topk" and "folded_scale" in meta


def test_a_folder_of_nothing_known_lists_the_layouts(tmp_path):
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(CheckpointError, match="SAELens: cfg.json.*Gemma Scope: params.npz"):
    export.load(tmp_path)
  (tmp_path / "cfg.json").write_text(json.dumps({}))
  with pytest.raises(CheckpointError, match="missing"):
    export.load(tmp_path / "nowhere")


def _standard_sae(norm: str, seed: int = 0):
  """A sae-lens StandardSAE with random weights whose cfg says normalize_activations=norm."""
  from sae_lens import StandardSAE, StandardSAEConfig
  from sae_lens.saes.sae import SAEMetadata

  torch.manual_seed(seed)
  meta = SAEMetadata(hook_name="blocks.1.hook_mlp_out")
  sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=32, normalize_activations=norm, metadata=meta))
  with torch.no_grad():
    for p in sae.parameters():
      p.copy_(torch.randn_like(p) * 0.3)
  return sae


def _assert_equal_to(theirs, config, variables, x):
  z, x_hat = ours(config, variables, x)
  z_ref, x_ref = peer(theirs, x)
  assert 0 < (z != 0).mean() < 1
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(x_hat, x_ref, atol=1e-5, rtol=1e-5)


def test_expected_average_only_in_is_folded_where_sae_lens_folds_it(tmp_path, monkeypatch):
  """sae-lens 6.54: from_pretrained folds the release's norm_scaling_factor; load_from_disk
  folds nothing (jaxsae warns); its trainer's activation_scaler.json is folded by jaxsae as
  sae-lens's own fold_activation_norm_scaling_factor would."""
  from sae_lens import SAE
  from sae_lens.loading.pretrained_saes_directory import (
    get_norm_scaling_factor,
    get_pretrained_saes_directory,
  )

  release, sae_id = "gpt2-small-mlp-tm", "blocks.1.hook_mlp_out"
  factor = get_norm_scaling_factor(release, sae_id)
  assert factor == pytest.approx(2.3694, abs=1e-4)
  go_offline(monkeypatch, tmp_path / "hub")
  folder = repo_snapshot(tmp_path / "hub", "tommmcgrath/gpt2-small-mlp-out-saes")
  folder = folder / get_pretrained_saes_directory()[release].saes_map[sae_id]
  _standard_sae("expected_average_only_in").save_model(str(folder))
  x = inputs(8)
  config, variables, meta = export.load(f"saelens:{release}/{sae_id}")
  assert meta["normalize_activations"] == "expected_average_only_in"
  _assert_equal_to(SAE.from_pretrained(release, sae_id), config, variables, x)

  with pytest.warns(UserWarning, match="normalize_activations='expected_average_only_in'"):
    config, variables, _ = export.load(folder)
  _assert_equal_to(SAE.load_from_disk(folder), config, variables, x)

  (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 1.7}))
  config, variables, _ = export.load(folder)
  theirs = SAE.load_from_disk(folder)
  theirs.fold_activation_norm_scaling_factor(1.7)
  _assert_equal_to(theirs, config, variables, x)


@pytest.mark.parametrize("norm", ["constant_norm_rescale", "layer_norm"])
def test_per_token_normalizations_are_refused_naming_the_setting(norm, tmp_path):
  _standard_sae(norm).save_model(str(tmp_path))
  with pytest.raises(
    CheckpointError, match=f"normalize_activations='{norm}'.*depends on the token"
  ):
    export.load(tmp_path)


def test_covariance_whitening_reads_as_sae_lens_load_from_disk_does(tmp_path):
  from sae_lens import SAE

  _standard_sae("covariance_whitening").save_model(str(tmp_path))
  with pytest.warns(UserWarning, match="records no factor"):
    config, variables, _ = export.load(tmp_path)
  _assert_equal_to(SAE.load_from_disk(tmp_path), config, variables, inputs(8))
