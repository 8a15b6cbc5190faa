"""hf:OWNER/REPO/PATH ids: parsed into repo, revision and path; read from huggingface_hub's
cache offline; and, with HF_HUB_OFFLINE=1 and nothing cached, one error naming the repo and
the download command. No test reaches the network."""

import numpy as np
import pytest
import torch
from zoo_helpers import go_offline, repo_snapshot

from jaxsae.errors import CheckpointError
from jaxsae.sae import export
from jaxsae.sae.zoo import hub


@pytest.mark.parametrize(
  "text, repo_id, path, revision",
  [
    (
      "hf:google/gemma-scope-2-270m-pt/resid_post/layer_12_width_16k_l0_big",
      "google/gemma-scope-2-270m-pt",
      "resid_post/layer_12_width_16k_l0_big",
      None,
    ),
    (
      "hf:mwhanna/qwen3-4b-transcoders/layer_1.safetensors/",
      "mwhanna/qwen3-4b-transcoders",
      "layer_1.safetensors",
      None,
    ),  # fmt: skip
    (
      "hf:EleutherAI/sae-pythia-70m-32k@v1.0/layers.3",
      "EleutherAI/sae-pythia-70m-32k",
      "layers.3",
      "v1.0",
    ),  # fmt: skip
    ("hf:owner/repo", "owner/repo", "", None),
  ],
)
def test_hub_ids_parse_into_repo_path_and_revision(text, repo_id, path, revision):
  assert hub.is_hub_id(text)
  where = hub.parse(text)
  assert (where.repo_id, where.path, where.revision) == (repo_id, path, revision)
  if path:
    assert where.patterns()[:2] == [path, f"{path}/*"]
  else:
    assert where.patterns() is None  # The whole repo.


@pytest.mark.parametrize("text", ["hf:justaname", "hf:", "hf:a b/c"])
def test_malformed_hub_ids_show_the_form(text):
  with pytest.raises(CheckpointError, match="hf:OWNER/REPO/PATH"):
    export.load(text)


def test_offline_with_nothing_cached_names_the_repo_and_how_to_download_it(tmp_path, monkeypatch):
  go_offline(monkeypatch, tmp_path / "empty")
  with pytest.raises(CheckpointError) as info:
    export.load("hf:EleutherAI/sae-pythia-70m-32k/layers.3")
  message = str(info.value)
  assert (
    "HF_HUB_OFFLINE is set" in message and "EleutherAI/sae-pythia-70m-32k / layers.3" in message
  )
  assert str(tmp_path / "empty") in message
  command = (
    "hf download EleutherAI/sae-pythia-70m-32k --include 'layers.3' 'layers.3/*' --local-dir DIR"
  )
  assert command in message and "huggingface-cli download" in message
  assert "pass the local path DIR/layers.3" in message


def test_a_cached_hub_folder_loads_as_its_local_path_would(tmp_path, monkeypatch):
  from sparsify.config import SparseCoderConfig
  from sparsify.sparse_coder import SparseCoder

  go_offline(monkeypatch, tmp_path / "hub")
  snapshot = repo_snapshot(tmp_path / "hub", "EleutherAI/sae-tiny")
  torch.manual_seed(0)
  coder = SparseCoder(8, SparseCoderConfig(num_latents=32, k=4))
  with torch.no_grad():
    coder.encoder.bias.normal_()
  coder.save_to_disk(snapshot / "layers.1")
  config, variables, meta = export.load("hf:EleutherAI/sae-tiny/layers.1")
  local_config, local_variables, _ = export.load(snapshot / "layers.1")
  assert config == local_config and meta["repo_id"] == "EleutherAI/sae-tiny"
  assert (meta["source_format"], meta["hook"]) == ("sparsify", "blocks.1.resid_post")
  for k, v in variables["params"].items():
    np.testing.assert_array_equal(v, local_variables["params"][k])
  with pytest.raises(
    CheckpointError, match="cached snapshot of EleutherAI/sae-tiny.*lacks layers.2"
  ):
    export.load("hf:EleutherAI/sae-tiny/layers.2")
