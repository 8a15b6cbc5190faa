"""sparsify transcoders and skip SAEs: folders written by sparsify's own save_to_disk read as
jaxsae transcoders equal to sparsify's SparseCoder.load_from_disk, and written back by jaxsae
in a layout sparsify's loader reads to the same outputs."""

import numpy as np
import pytest
import torch
from zoo_helpers import inputs

from jaxsae.errors import CheckpointError
from jaxsae.sae import export, sparsify_format, zoo
from jaxsae.sae.zoo import transcoders

D, N, K = 8, 32, 4


def sparsify_coder(transcode, skip, seed=0):
  """A sparsify SparseCoder with random weights; the encoder bias is pushed down so that some
  rows have fewer than k positive pre-activations (where sparsify's ReLU matters)."""
  from sparsify.config import SparseCoderConfig
  from sparsify.sparse_coder import SparseCoder

  torch.manual_seed(seed)
  cfg = SparseCoderConfig(num_latents=N, k=K, transcode=transcode, skip_connection=skip)
  coder = SparseCoder(D, cfg)
  with torch.no_grad():
    for p in coder.parameters():
      p.copy_(torch.randn_like(p) * 0.5)
    coder.encoder.bias.sub_(2.0)
  return coder


def theirs(folder, x):
  """(dense latents, output) of sparsify's own loader on x."""
  from sparsify.sparse_coder import SparseCoder

  coder = SparseCoder.load_from_disk(folder)
  with torch.no_grad():
    xt = torch.from_numpy(x)
    acts, idx, _ = coder.encode(xt)
    z = np.zeros((len(x), coder.num_latents), np.float32)
    np.put_along_axis(z, idx.numpy(), acts.numpy(), 1)
    return z, coder(xt).sae_out.numpy(), coder


@pytest.mark.parametrize(
  "transcode, skip, name, hooks",
  [
    (True, False, "layers.2.mlp", ("blocks.2.mlp.in", "blocks.2.mlp.out")),
    (True, True, "layers.2", ("blocks.2.resid_pre", "blocks.2.resid_post")),
    (False, True, "layers.2", ("blocks.2.resid_post", "blocks.2.resid_post")),
  ],
)
def test_sparsify_transcoders_equal_sparsify_and_write_back(transcode, skip, name, hooks, tmp_path):
  folder = tmp_path / "run" / name
  sparsify_coder(transcode, skip).save_to_disk(folder)
  with pytest.raises(CheckpointError, match="sparsify_transcoder.*load_transcoder"):
    export.load(folder)
  with pytest.raises(CheckpointError, match="sparsify transcoder or skip SAE"):
    sparsify_format.load(folder)
  tc = zoo.load_transcoder(folder)
  assert (tc.input_hook, tc.output_hook) == hooks
  assert (tc.activation, tc.k, tc.W_skip is not None) == ("relu_topk", K, skip)
  x = inputs(D)
  z_ref, y_ref, _ = theirs(folder, x)
  z = transcoders.encode(tc, x)
  assert ((z > 0).sum(1) < K).any()  # Rows where TopK without the ReLU would differ.
  np.testing.assert_allclose(z, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(transcoders.decode(tc, z, x), y_ref, atol=1e-5, rtol=1e-5)

  written = sparsify_format.save_transcoder(tmp_path / "ours" / name, tc)
  z_back, y_back, coder = theirs(written, x)
  assert coder.cfg.transcode and (coder.W_skip is not None) == skip
  np.testing.assert_allclose(z_back, z_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(y_back, y_ref, atol=1e-5, rtol=1e-5)


def test_transcoders_sparsify_cannot_express_are_refused_by_name(tmp_path):
  rng = np.random.default_rng(0)
  tc = transcoders.Transcoder(
    W_enc=rng.normal(size=(D, N)).astype(np.float32),
    b_enc=np.zeros(N, np.float32),
    W_dec=rng.normal(size=(N, 6)).astype(np.float32),
    b_dec=np.zeros(6, np.float32),
    activation="topk",
    k=K,
  )
  with pytest.raises(CheckpointError, match="TopK_k\\(ReLU\\(pre\\)\\).*'topk'.*write_set"):
    sparsify_format.save_transcoder(tmp_path / "a", tc)
  tc = transcoders.Transcoder(**{**vars(tc), "activation": "relu_topk"})
  with pytest.raises(CheckpointError, match="d_in=8 to d_out=6"):
    sparsify_format.save_transcoder(tmp_path / "b", tc)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
