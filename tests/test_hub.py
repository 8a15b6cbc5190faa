"""Hub ids load through huggingface_hub's cache: offline, a cached snapshot loads as its folder
does; with neither network nor cache, one error names the repo, the files and the fix."""

import shutil

import huggingface_hub
import numpy as np
import pytest
from test_families import save_family

from jaxsae.errors import CheckpointError
from jaxsae.models import pretrained
from jaxsae.models.formats import hub

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  """An empty Hub cache, with the Hub switched off (these machines cannot reach it)."""
  cache = tmp_path / "hub"
  cache.mkdir()
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
  return cache


def test_a_cached_snapshot_loads_offline_like_its_folder(offline_cache, tmp_path):
  folder = tmp_path / "folder"
  save_family("qwen3", folder)
  repo = offline_cache / "models--someone--tiny-qwen3"
  shutil.copytree(folder, repo / "snapshots" / REVISION)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(REVISION)

  lm = pretrained.load("someone/tiny-qwen3")
  assert lm.metadata["name_or_path"] == "someone/tiny-qwen3"
  want, _ = pretrained.load(folder).run(np.arange(9)[None])
  got, _ = lm.run(np.arange(9)[None])
  np.testing.assert_array_equal(got, want)


def test_no_network_and_no_cache_names_repo_files_and_fix(offline_cache):
  with pytest.raises(CheckpointError) as e:
    pretrained.load("google/gemma-3-270m")
  message = str(e.value)
  assert "google/gemma-3-270m" in message and "config.json" in message
  assert "huggingface-cli download google/gemma-3-270m" in message


def test_repo_ids_are_told_from_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert hub.looks_like_repo_id("google/gemma-3-270m")
  (tmp_path / "google").mkdir()
  (tmp_path / "google" / "gemma-3-270m").mkdir()
  assert not hub.looks_like_repo_id("google/gemma-3-270m")  # An existing folder wins.
  assert not hub.looks_like_repo_id("/abs/path") and not hub.looks_like_repo_id("a/b/c")
