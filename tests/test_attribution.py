"""Attribution graphs (jaxsae.attribution) on a tiny random model: every edge equals the change
in its target when its source's write is added to a forward pass whose attention patterns and
norm factors are pinned to their values (an independent, forward-only computation); a model's
own MLPs as transcoders give a graph with no error influence; pruning and scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_circuit_config
from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution import prune as prune_lib
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.sae.zoo import transcoders as tc_lib
from jaxsae.text.tokenizer import ByteTokenizer

PROMPT = np.array([7, 40, 99, 3, 250, 17, 64, 5], np.int32)


@pytest.fixture(scope="module")
def lm():
  config = tiny_circuit_config(activation="relu", n_layers=3)  # MLP = ReLU(x W_in) W_out.
  return LanguageModel(
    config, T.init_params(T.Transformer(config), jax.random.key(0)), ByteTokenizer(), {}
  )


def _hooks(layer):
  return {"input_hook": f"blocks.{layer}.mlp.in", "output_hook": f"blocks.{layer}.mlp.out"}


def _random_clt(lm, seed=1, n=12):
  rng = np.random.default_rng(seed)
  L, d = lm.config.n_layers, lm.config.d_model
  w = lambda *shape: rng.normal(0, 0.4, shape).astype(np.float32)  # noqa: E731
  return tc_lib.CrossLayerTranscoder(
    w(L, d, n), w(L, n) + 0.3, tuple(w(n, L - i, d) for i in range(L)), w(L, d), "relu",
    input_hooks=tuple(f"blocks.{i}.mlp.in" for i in range(L)),
    output_hooks=tuple(f"blocks.{i}.mlp.out" for i in range(L)),
  )  # fmt: skip


def _exact(lm):
  out = []
  for layer in range(lm.config.n_layers):
    mlp = lm.params[f"blocks_{layer}"]["mlp"]
    W_in, W_out = np.asarray(mlp["fc_in"]["kernel"]), np.asarray(mlp["fc_out"]["kernel"])
    zeros = lambda n: np.zeros(n, np.float32)  # noqa: E731
    out.append(
      tc_lib.Transcoder(
        W_in, zeros(W_in.shape[1]), W_out, zeros(W_out.shape[1]), "relu", **_hooks(layer)
      )
    )
  return out


def _pinned_reads(lm, adds: dict):
  """(each layer's mlp.in, logits) with every pattern, norm factor and MLP output pinned to
  the prompt's values, plus `adds` {hook: (T, d) array} added at embed.tok / mlp.out."""
  model = T.Transformer(lm.config)
  tokens = jnp.asarray(PROMPT[None])
  names = hooks_lib.all_names(lm.config)
  pinned = [
    n
    for n in names
    if n.endswith("attn.pattern") or n.endswith("norm_factor") or n.endswith("mlp.out")
  ]
  _, base = T.run(model, lm.params, tokens, capture=pinned)
  edits = {n: (lambda x, v=base[n]: v) for n in pinned}
  for hook, add in adds.items():
    keep = edits.get(hook, lambda x: x)
    edits[hook] = lambda x, keep=keep, add=add: keep(x) + jnp.asarray(add)[None]
  ins = [f"blocks.{i}.mlp.in" for i in range(lm.config.n_layers)]
  logits, cap = T.run(model, lm.params, tokens, capture=ins, edits=edits)
  return [np.asarray(cap[h][0], np.float64) for h in ins], np.asarray(logits[0, -1], np.float64)


def _read(graph, clt, target, reads, logits):
  if target < graph.n_features:
    layer, pos, f = graph.features[target]
    return reads[layer][pos] @ clt.W_enc[layer][:, f]
  token = graph.logit_tokens[target - graph.logit_slice.start]
  return logits[token] - logits.mean()


def test_every_kind_of_edge_is_the_pinned_models_response_to_that_write(lm):
  clt = _random_clt(lm)
  g = graph_lib.compute(lm, clt, PROMPT, batch_size=8, max_logits=4)
  L, n_pos = lm.config.n_layers, len(PROMPT)
  assert g.adjacency.shape[0] == g.n_features + L * n_pos + n_pos + len(g.logit_tokens)
  assert g.n_features > 10 and len(g.logit_tokens) == 4  # A random model: flat, capped at 4.
  base_reads, base_logits = _pinned_reads(lm, {})
  emb = np.asarray(
    T.run(T.Transformer(lm.config), lm.params, jnp.asarray(PROMPT[None]), capture=["embed.tok"])[1][
      "embed.tok"
    ][0]
  )
  rng = np.random.default_rng(0)
  checked = 0
  for target in [
    *rng.choice(g.n_features, 6, replace=False),
    g.logit_slice.start,
    g.logit_slice.start + 1,
  ]:
    row = g.adjacency[target]
    for source in [
      *np.nonzero(row[: g.n_features])[0][:2],
      g.error_slice.start + n_pos + 2,
      g.token_slice.start + 1,
    ]:
      adds = {}
      if source < g.n_features:
        layer, pos, f = g.features[source]
        for j in range(layer, L):  # A CLT feature writes its own layer and every later one.
          write = np.zeros((n_pos, lm.config.d_model), np.float32)
          write[pos] = g.activations[source] * clt.W_dec[layer][f, j - layer]
          adds[f"blocks.{j}.mlp.out"] = write
      elif source < g.token_slice.start:
        layer, pos = divmod(source - g.n_features, n_pos)
        err_write = np.zeros((n_pos, lm.config.d_model), np.float32)
        err_write[pos] = _error(lm, clt, layer)[pos]
        adds[f"blocks.{layer}.mlp.out"] = err_write
      else:
        pos = source - g.token_slice.start
        tok_write = np.zeros((n_pos, lm.config.d_model), np.float32)
        tok_write[pos] = emb[pos]
        adds["embed.tok"] = tok_write
      reads, logits = _pinned_reads(lm, adds)
      want = _read(g, clt, target, reads, logits) - _read(g, clt, target, base_reads, base_logits)
      assert row[source] == pytest.approx(want, rel=2e-3, abs=2e-5), (target, source)
      checked += abs(want) > 1e-4
  assert checked >= 10  # Most checked edges are not zero.


def _error(lm, clt, layer):
  ins = [f"blocks.{i}.mlp.in" for i in range(lm.config.n_layers)]
  _, cap = lm.run(PROMPT[None], capture=[*ins, f"blocks.{layer}.mlp.out"])
  x = np.stack([np.asarray(cap[h][0]) for h in ins])  # L × T × d: positions as the batch.
  y_hat = tc_lib.clt_decode(clt, tc_lib.clt_encode(clt, x))[layer]
  return np.asarray(cap[f"blocks.{layer}.mlp.out"][0]) - y_hat


def test_a_models_own_mlps_leave_nothing_to_the_error_nodes(lm):
  g = graph_lib.compute(lm, _exact(lm), PROMPT, batch_size=16)
  assert np.abs(g.adjacency[:, g.error_slice]).max() < 1e-4
  s = prune_lib.scores(g)
  assert s["replacement"] == pytest.approx(1.0, abs=1e-4)
  assert s["completeness"] == pytest.approx(1.0, abs=1e-4)
  noisy = prune_lib.scores(graph_lib.compute(lm, _random_clt(lm), PROMPT, batch_size=16))
  assert 0 < noisy["replacement"] < 0.999 and 0 < noisy["completeness"] < 0.999


def test_pruning_keeps_tokens_and_logits_and_tightens_with_the_threshold(lm):
  g = graph_lib.compute(lm, _random_clt(lm), PROMPT, batch_size=16)
  loose, tight = prune_lib.prune(g, 0.95, 0.99), prune_lib.prune(g, 0.5, 0.9)
  for p in (loose, tight):
    assert p.node_mask[g.token_slice.start :].all()
    assert not p.edge_mask[~p.node_mask].any() and not p.edge_mask[:, ~p.node_mask].any()
  assert tight.node_mask.sum() < loose.node_mask.sum() <= g.adjacency.shape[0]
  assert tight.edge_mask.sum() < loose.edge_mask.sum()
  with pytest.raises(ValueError, match="node_threshold=1.5"):
    prune_lib.prune(g, 1.5)


def test_salient_logits_are_the_fewest_reaching_the_probability():
  logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
  tokens, probs = graph_lib.salient_logits(logits, 10, 0.95)
  assert tokens.tolist() == [0, 1, 2] and probs.sum() == pytest.approx(0.95)
  assert graph_lib.salient_logits(logits, 2, 0.95)[0].tolist() == [0, 1]


def test_the_frontend_json_lists_the_pruned_graph_as_circuit_tracer_names_it(lm, tmp_path):
  import json

  from jaxsae.attribution import frontend

  g = graph_lib.compute(lm, _random_clt(lm), PROMPT, batch_size=16, max_logits=3)
  pruned = prune_lib.prune(g)
  doc = frontend.document(g, pruned, lm.tokenizer, slug="tiny", scan="random-clt")
  path = frontend.write(tmp_path, doc)
  frontend.write(tmp_path, doc)  # Again: the index keeps one entry per slug.
  back = json.loads(path.read_text())
  assert set(back) == {"metadata", "qParams", "nodes", "links"}
  ids = {n["node_id"] for n in back["nodes"]}
  assert all(link["source"] in ids and link["target"] in ids for link in back["links"])
  kinds = {n["feature_type"] for n in back["nodes"]}
  assert {"embedding", "logit", "cross layer transcoder"} <= kinds
  assert sum(n["feature_type"] == "embedding" for n in back["nodes"]) == len(PROMPT)
  logits = [n for n in back["nodes"] if n["feature_type"] == "logit"]
  assert [n["node_id"] for n in logits] == [
    f"{lm.config.n_layers + 1}_{t}_{len(PROMPT) - 1}" for t in g.logit_tokens
  ]
  assert logits[0]["is_target_logit"] and logits[0]["token_prob"] == pytest.approx(
    g.logit_probabilities[0]
  )
  feature = next(n for n in back["nodes"] if n["feature_type"] == "cross layer transcoder")
  layer, index, pos = (int(v) for v in feature["node_id"].split("_"))
  row = np.nonzero((g.features == [layer, pos, index]).all(1))[0][0]
  assert feature["activation"] == pytest.approx(g.activations[row])
  assert feature["feature"] == (layer + index) * (layer + index + 1) // 2 + index
  link = back["links"][0]
  kept = np.nonzero(pruned.edge_mask)
  assert len(back["links"]) == len(kept[0]) and isinstance(link["weight"], float)
  index_doc = json.loads((tmp_path / "graph-metadata.json").read_text())
  assert [m["slug"] for m in index_doc["graphs"]] == ["tiny"]
  assert back["metadata"]["prompt_tokens"] == [lm.tokenizer.decode([int(t)]) for t in PROMPT]


def test_interventions_predicted_by_the_graph_match_the_pinned_model(lm):
  """Scaling features by 0.999 (small enough that no feature crosses zero; this random model
  amplifies a 2% change past several thresholds): the graph's linear
  prediction of the logit changes equals the replacement model's with patterns and norm
  factors pinned; with them free, the live model's effect is measured as well."""
  from jaxsae.attribution import interventions

  clt = _random_clt(lm)
  g = graph_lib.compute(lm, clt, PROMPT, batch_size=16, max_logits=4)
  early = np.nonzero(g.features[:, 0] == 0)[0][:3]  # Layer-0 features: effects through the rest.
  predicted = interventions.predicted_logit_effects(g, early, 0.999)
  pinned = interventions.actual_logit_effects(lm, clt, g, early, 0.999, frozen=True)
  free = interventions.actual_logit_effects(lm, clt, g, early, 0.999)
  assert np.abs(pinned).max() > 1e-2
  np.testing.assert_allclose(predicted, pinned, rtol=2e-3, atol=1e-3 * np.abs(pinned).max())
  assert np.isfinite(free).all() and np.abs(free).max() > 1e-4


def test_the_experiment_writes_a_graph_of_a_saved_model_and_clt(lm, tmp_path):
  """End to end: a saved model and a CLT in circuit-tracer's format; the viewer's JSON and the
  results page, whose scores are those of the graph computed here."""
  import json
  import subprocess
  import sys

  from conftest import REPO
  from jaxsae.models import pretrained
  from jaxsae.sae.zoo import circuit_tracer

  model = pretrained.save(tmp_path / "model", lm.config, lm.params, lm.tokenizer, {})
  clt = _random_clt(lm)
  folder = circuit_tracer.write_clt(tmp_path / "clt", clt)
  workdir = tmp_path / "out"
  prompt = "x = ['a"
  command = [sys.executable, "-m", "experiments.attribution", f"--transcoders={folder}"]
  command += [f"--model={model}", f"--prompt={prompt}", "--slug=tiny", f"--workdir={workdir}"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  record = json.loads((workdir / "results.jsonl").read_text())
  expected = prune_lib.scores(graph_lib.compute(lm, clt, lm.tokenizer.encode(prompt)))
  assert record["replacement_score"] == pytest.approx(expected["replacement"], rel=1e-4)
  assert record["tokens"] == len(prompt) and 0 < record["kept_nodes"] < record["nodes"]
  doc = json.loads((workdir / "graphs" / "tiny.json").read_text())
  assert len(doc["nodes"]) <= record["kept_nodes"] and doc["links"]
  assert "## Most influential feature nodes" in (workdir / "results.md").read_text()
  html = (workdir / "graph.html").read_text()
  assert html.count("<circle") == record["kept_nodes"] and "<svg" in html
  assert 0 < html.count('<path class="e"') <= record["kept_edges"]


def test_a_graphs_compiled_memory_holds_its_writes_and_gradients(lm):
  """The edges program holds every feature's F × L × d writes; the pullback, B targets'
  gradients at every write site (embedding and L MLP outputs)."""
  from jaxsae.attribution.memory import graph_memory

  clt, T = _random_clt(lm), 10
  L, d = clt.n_layers, lm.config.d_model
  small = graph_memory(lm, clt, T, n_features=100, batch_size=8)
  large = graph_memory(lm, clt, T, n_features=1000, batch_size=32)
  assert large["edges_peak"] - small["edges_peak"] >= 900 * L * d * 4
  assert large["pullback_peak"] - small["pullback_peak"] >= 24 * (L + 1) * T * d * 4
  assert large["held"] >= 1000 * L * d * 4
  assert large["device_peak"] == max(large["pullback_peak"] + large["held"], large["edges_peak"])
  assert large["adjacency"] == (1000 + L * T + T + 10) ** 2 * 4
