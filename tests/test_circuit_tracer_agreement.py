"""jaxsae's attribution graphs against circuit-tracer 0.5.0's own, on identical weights, model
and prompt: a tiny random Gemma 3 built and saved by transformers (circuit-tracer's NNSight
backend runs it; jaxsae loads the folder), and transcoders jaxsae writes in circuit-tracer's
format, laid out as Hub repos that circuit-tracer's `load_transcoder_from_hub` reads offline.

circuit-tracer runs in a subprocess with its pinned transformers beside the test environment
(tracer_env.py); tests/circuit_tracer_side.py is its side. Edge by edge, the graphs agree, with
the one difference `jaxsae.attribution.graph` states: circuit-tracer's NNSight backend writes
token nodes with the unscaled embedding row, so its token edges on Gemma are 1/√d of jaxsae's.
"""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import tracer_env
from zoo_helpers import repo_snapshot

from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution import prune as prune_lib
from jaxsae.models import pretrained
from jaxsae.sae import zoo
from jaxsae.sae.zoo import circuit_tracer, gemma_scope
from jaxsae.sae.zoo.transcoders import CrossLayerTranscoder, Transcoder

D, N, L = 32, 24, 3  # The side's tiny Gemma 3: d_model 32, 3 layers.
SIDE = pathlib.Path(__file__).with_name("circuit_tracer_side.py")
PROMPT = [1] + [3 + ord(c) - 32 for c in "x = ['a', \"b\"]"]  # <bos> + the side's char ids.


def _jumprelu_layer(rng, layer: int, skip: bool) -> Transcoder:
  """Thresholds around the pre-activations' scale, so that about a third of features fire."""
  return Transcoder(
    W_enc=(rng.normal(size=(D, N)) / np.sqrt(D)).astype(np.float32),
    b_enc=(0.1 * rng.normal(size=N)).astype(np.float32),
    W_dec=(0.3 * rng.normal(size=(N, D))).astype(np.float32),
    b_dec=(0.1 * rng.normal(size=D)).astype(np.float32),
    activation="jumprelu",
    threshold=(0.2 + 0.5 * np.abs(rng.normal(size=N))).astype(np.float32),
    W_skip=(0.1 * rng.normal(size=(D, D))).astype(np.float32) if skip else None,
    input_hook=f"blocks.{layer}.mlp.in",
    output_hook=f"blocks.{layer}.mlp.out",
  )


def _clt(rng) -> CrossLayerTranscoder:
  return CrossLayerTranscoder(
    W_enc=(rng.normal(size=(L, D, N)) / np.sqrt(D)).astype(np.float32),
    b_enc=(0.1 * rng.normal(size=(L, N))).astype(np.float32),
    W_dec=tuple((0.3 * rng.normal(size=(N, L - i, D))).astype(np.float32) for i in range(L)),
    b_dec=(0.1 * rng.normal(size=(L, D))).astype(np.float32),
    activation="jumprelu",
    threshold=(0.2 + 0.5 * np.abs(rng.normal(size=(L, N)))).astype(np.float32),
    input_hooks=tuple(f"blocks.{i}.mlp.in" for i in range(L)),
    output_hooks=tuple(f"blocks.{i}.mlp.out" for i in range(L)),
  )


@pytest.fixture
def both_sides(tmp_path):
  """{set name: (jaxsae's Graph, circuit-tracer's arrays)} for a per-layer set, a skip set and
  a CLT written by jaxsae in circuit-tracer's format, and the skip set and CLT again in Gemma
  Scope 2's, each read by jaxsae and by circuit-tracer's own loaders."""
  root = tmp_path
  cache, rng = root / "hub", np.random.default_rng(0)
  folders = {}
  for name, skip in (("plt", False), ("skip", True)):
    folders[name] = repo_snapshot(cache, f"jaxsae/{name}")
    layers = {i: _jumprelu_layer(rng, i, skip) for i in range(L)}
    circuit_tracer.write_set(folders[name], layers, model_name="tiny-gemma3")
  folders["clt"] = repo_snapshot(cache, "jaxsae/clt")
  clt = _clt(rng)
  circuit_tracer.write_clt(folders["clt"], clt, model_name="tiny-gemma3")
  sets = [{"name": name, "repo_id": f"jaxsae/{name}"} for name in folders]
  # The same skip set and CLT in Gemma Scope 2's layout.
  skip_set = zoo.load_replacement(str(folders["skip"]))
  paths = []
  for i, tc in enumerate(skip_set):
    paths.append(gemma_scope.write_transcoder(root / f"gs2/transcoder/layer_{i}_width_1k", tc))
  folders["gs2_skip"] = [str(p) for p in paths]
  folders["gs2_clt"] = gemma_scope.write_clt(root / "gs2/clt/width_1k", clt)
  sets.append({"name": "gs2_skip", "gemma_scope_2": "transcoders"})
  sets[-1]["paths"] = [str(p / "params.safetensors") for p in paths]
  sets.append({"name": "gs2_clt", "gemma_scope_2": "clt"})
  sets[-1]["paths"] = [
    str(root / f"gs2/clt/width_1k/params_layer_{i}.safetensors") for i in range(L)
  ]
  spec = {"model_dir": str(root / "model"), "prompt": PROMPT, "sets": sets, "out_dir": str(root)}
  (root / "spec.json").write_text(json.dumps(spec))
  offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
  tracer_env.run(SIDE, str(root / "spec.json"), env=offline)

  lm = pretrained.load(str(root / "model"))
  return {
    name: (
      graph_lib.compute(lm, zoo.load_replacement(folder), PROMPT, skip_first=1),
      dict(np.load(root / f"{name}.npz")),
    )
    for name, folder in ((k, v if isinstance(v, list) else str(v)) for k, v in folders.items())
  }


@pytest.mark.slow
def test_graphs_pruning_and_scores_agree_with_circuit_tracers(both_sides):
  for name, (ours, theirs) in both_sides.items():
    assert ours.n_features > 100, name  # Enough active features that the comparison bites.
    np.testing.assert_array_equal(ours.features, theirs["active_features"], err_msg=name)
    np.testing.assert_allclose(ours.activations, theirs["activation_values"], atol=1e-5)
    assert not (ours.features[:, 1] == 0).any()  # BOS features dropped on both sides.
    np.testing.assert_array_equal(ours.logit_tokens, theirs["logit_tokens"], err_msg=name)
    np.testing.assert_allclose(ours.logit_probabilities, theirs["logit_probabilities"], atol=1e-6)

    A, B = ours.adjacency, theirs["adjacency"]
    assert A.shape == B.shape, name
    scale = float(theirs["embed_scale"])  # √d: Gemma scales its embeddings.
    assert scale == pytest.approx(np.sqrt(D))
    tokens = ours.token_slice
    features_and_errors = slice(0, tokens.start)
    atol = 2e-6 * np.abs(A).max()
    np.testing.assert_allclose(A[:, features_and_errors], B[:, features_and_errors], atol=atol)
    np.testing.assert_allclose(A[:, tokens], scale * B[:, tokens], atol=atol, err_msg=name)
    assert np.abs(A[:, tokens]).max() > 0.5, name
    errors = A[:, ours.error_slice].reshape(len(A), L, ours.n_pos)
    assert not errors[:, :, 0].any() and np.abs(errors).max() > 0.5, name  # BOS: no error.

    # Pruning and the scores, on circuit-tracer's token scale.
    rescaled = A.copy()
    rescaled[:, tokens] /= scale
    ours = dataclasses.replace(ours, adjacency=rescaled)
    pruned = prune_lib.prune(ours)
    np.testing.assert_array_equal(pruned.node_mask, theirs["node_mask"], err_msg=name)
    np.testing.assert_array_equal(pruned.edge_mask, theirs["edge_mask"], err_msg=name)
    assert 0 < pruned.node_mask[: ours.n_features].sum() < ours.n_features, name
    np.testing.assert_allclose(
      pruned.cumulative_influence, theirs["cumulative_scores"], atol=1e-5, err_msg=name
    )
    scores = prune_lib.scores(ours)
    want_replacement, want_completeness = theirs["scores"]
    assert scores["replacement"] == pytest.approx(want_replacement, abs=1e-5), name
    assert scores["completeness"] == pytest.approx(want_completeness, abs=1e-5), name
    assert 0.2 < scores["replacement"] < 0.95, name  # Random transcoders: errors matter.
