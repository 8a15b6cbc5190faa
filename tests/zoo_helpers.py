"""Shared by the tests/test_zoo*.py files: a Hugging Face cache laid out as the Hub writes it,
offline mode for both huggingface_hub and jaxsae, and tiny random dictionary weights."""

import pathlib

import numpy as np

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def repo_snapshot(cache: pathlib.Path, repo_id: str) -> pathlib.Path:
  """The snapshot folder of `repo_id` in a Hub cache at `cache` (refs/main points at it)."""
  repo = cache / ("models--" + repo_id.replace("/", "--"))
  (repo / "refs").mkdir(parents=True, exist_ok=True)
  (repo / "refs" / "main").write_text(COMMIT)
  snapshot = repo / "snapshots" / COMMIT
  snapshot.mkdir(parents=True, exist_ok=True)
  return snapshot


def go_offline(monkeypatch, cache: pathlib.Path) -> None:
  """HF_HUB_OFFLINE=1 with `cache` as the Hub cache, for jaxsae and for sae-lens's downloads."""
  from huggingface_hub import constants

  cache.mkdir(parents=True, exist_ok=True)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def jumprelu_weights(d_in, n, d_out=None, seed=0, skip=False, names=("W_enc", "W_dec")):
  """Gemma-Scope-like weights: thresholds around the pre-activations' scale, so some fire."""
  rng = np.random.default_rng(seed)
  d_out = d_out or d_in
  t = {
    names[0]: rng.normal(size=(d_in, n)).astype(np.float32) * 0.5,
    names[1]: rng.normal(size=(n, d_out)).astype(np.float32) * 0.5,
    "b_enc": rng.normal(size=n).astype(np.float32) * 0.3,
    "b_dec": rng.normal(size=d_out).astype(np.float32),
    "threshold": np.abs(rng.normal(size=n)).astype(np.float32) + 0.2,
  }
  if skip:
    t["affine_skip_connection"] = rng.normal(size=(d_in, d_out)).astype(np.float32) * 0.2
  return t


def inputs(d, rows=64, seed=1) -> np.ndarray:
  return (np.random.default_rng(seed).normal(size=(rows, d)) * 2.0).astype(np.float32)


def ours(config, variables, x):
  """(latents, reconstruction) of a jaxsae SAE on x."""
  from jaxsae.sae import registry

  sae = registry.build(config)
  z = sae.apply(variables, x, method="encode").latents
  return np.asarray(z), np.asarray(sae.apply(variables, z, method="decode"))


def peer(sae, x):
  """(latents, output) of a sae-lens SAE or transcoder on x (forward adds a skip connection)."""
  import torch

  with torch.no_grad():
    xt = torch.from_numpy(x)
    return sae.encode(xt).numpy(), sae(xt).numpy()
