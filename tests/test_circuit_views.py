"""Circuit views: the JSON document against edge_list, contexts against brute force, the page."""

import json
import re

import jax
import numpy as np
import pytest

from conftest import tiny_circuit_config
from jaxsae.errors import JaxsaeError
from jaxsae.models import transformer as T
from jaxsae.models.config import TransformerConfig
from jaxsae.models.language_model import LanguageModel
from jaxsae.sparse import edges as edges_lib
from jaxsae.sparse import nodes as nodes_lib
from jaxsae.sparse import views
from jaxsae.sparse.pruned_circuit import Circuit
from jaxsae.text.tokenizer import ByteTokenizer

CFG = tiny_circuit_config()
KEEP = {
  "blocks.0.attn.in": [1, 3, 5],
  "blocks.0.attn.q": [0, 9],
  "blocks.0.attn.v": [2, 12],
  "blocks.0.attn.z": [2, 5],
  "blocks.0.mlp.in": [1, 4],
  "blocks.0.mlp.post": [0, 7, 20],
  "blocks.0.mlp.out": [1, 4],
  "blocks.1.attn.in": [1, 4],
  "blocks.1.mlp.in": [4],
  "blocks.1.mlp.post": [3],
  "final.normed": [1, 4],
}
BEFORE, AFTER = 6, 2


@pytest.fixture(scope="module")
def lm():
  params = T.init_params(T.Transformer(CFG), jax.random.key(0))
  params = jax.tree_util.tree_map(np.array, params)
  q = params["blocks_0"]["attn"]["query"]["kernel"]  # (D, H, K)
  q[1, 0, 0] = 0.0  # attn.in 1 -> attn.q 0: no edge
  q[:, 1, :] = 0.0  # head 1's queries read nothing
  params["blocks_0"]["mlp"]["fc_in"]["kernel"][4, :] = 0.0  # mlp.in 4 feeds no neuron
  return LanguageModel(CFG, params, ByteTokenizer())


def make_circuit(config=CFG, task="demo <b>task</b>"):
  kept, scores = {}, {}
  rng = np.random.default_rng(0)
  for site in nodes_lib.node_sites(config):
    width = nodes_lib.site_width(config, site)
    kept[site] = np.zeros(width, bool)
    kept[site][KEEP.get(site, [])] = True
    scores[site] = rng.normal(size=width).astype(np.float32)
  metrics = {"nodes": sum(map(len, KEEP.values())), "heldout": {"sufficiency": {"loss": 0.1}}}
  return Circuit(task, "tiny", kept, scores, metrics)


@pytest.fixture(scope="module")
def windows():
  rng = np.random.default_rng(1)
  w = rng.integers(0, 256, size=(12, 24)).astype(np.int32)
  w[3, :17] = np.frombuffer(b"x<script>alert(1)", np.uint8)
  w[:, 0] = 256
  return w


@pytest.fixture(scope="module")
def contexts(lm, windows):
  return views.node_contexts(
    lm, make_circuit(), windows, top=3, before=BEFORE, after=AFTER, batch_size=5
  )


@pytest.fixture(scope="module")
def doc(lm, contexts):
  return views.circuit_document(lm, make_circuit(), contexts)


def test_document_lists_exactly_the_kept_nodes_and_edges(lm, doc):
  circuit = make_circuit()
  assert [n["id"] for n in doc["nodes"]] == [f"{s}:{c}" for s, c in circuit.kept_nodes()]
  assert doc["n_nodes"] == circuit.n_nodes == len(doc["nodes"])
  ids = [n["id"] for n in doc["nodes"]]
  assert len(set(ids)) == len(ids)
  q9 = next(n for n in doc["nodes"] if n["id"] == "blocks.0.attn.q:9")
  assert (q9["layer"], q9["kind"], q9["channel"], q9["head"], q9["dim"]) == (0, "attn.q", 9, 1, 1)
  assert q9["score"] == pytest.approx(float(circuit.scores["blocks.0.attn.q"][9]))
  final = next(n for n in doc["nodes"] if n["site"] == "final.normed")
  assert final["layer"] is None and final["column"] == CFG.n_layers and "head" not in final

  expected = list(edges_lib.edge_list(lm.params, CFG, circuit.kept))
  assert doc["n_edges"] == len(doc["edges"]) == len(expected)
  assert len(expected) == edges_lib.count_edges(lm.params, CFG, circuit.kept)["total"] > 10
  for got, e in zip(doc["edges"], expected, strict=True):
    assert (got["src"], got["dst"]) == (f"{e.src}:{e.src_channel}", f"{e.dst}:{e.dst_channel}")
    assert got["weight"] == e.weight
  pairs = {(e["src"], e["dst"]) for e in doc["edges"]}
  assert all(e["src"] in ids and e["dst"] in ids for e in doc["edges"])
  assert ("blocks.0.attn.in:1", "blocks.0.attn.q:0") not in pairs  # zeroed weight
  assert ("blocks.0.attn.in:3", "blocks.0.attn.q:0") in pairs
  assert not any(e["src"] == "blocks.0.mlp.in:4" for e in doc["edges"])
  assert not any(e["dst"] == "blocks.0.attn.q:9" for e in doc["edges"])  # head 1 zeroed
  counts = edges_lib.count_edges(lm.params, CFG, circuit.kept)
  assert doc["edge_counts"] == {k: v for k, v in counts.items() if k != "total" and v}
  assert all(e["weight"] == 1.0 for e in doc["edges"] if e["kind"] in ("v->z", "mlp->resid"))


def test_contexts_are_the_true_top_activations(lm, windows, contexts):
  circuit = make_circuit()
  sites = [s for s in KEEP]
  _, captured = lm.run(windows, capture=sites)
  assert set(contexts) == {f"{s}:{c}" for s, c in circuit.kept_nodes()}
  negative = 0
  for site, channel in circuit.kept_nodes():
    x = np.asarray(nodes_lib.flat_channels(site, captured[site]))[..., channel]  # (N, T)
    score = np.abs(x) if site.split(".")[-1] != "post" else x
    pos = score.argmax(1)
    best = score[np.arange(len(x)), pos]
    wins = np.argsort(-best, kind="stable")[:3]
    wins = wins[x[wins, pos[wins]] != 0]  # windows where the node is never active give none
    found = contexts[f"{site}:{channel}"]
    assert [c.window for c in found] == wins.tolist()
    for c, w in zip(found, wins, strict=True):
      p = int(pos[w])
      assert c.position == p
      lo, hi = max(0, p - BEFORE), min(windows.shape[1], p + AFTER + 1)
      assert c.tokens == windows[w, lo:hi].tolist() and c.focus == p - lo
      np.testing.assert_allclose(c.activations, x[w, lo:hi], rtol=1e-5, atol=1e-6)
      negative += c.value < 0
  assert negative > 0  # signed nodes keep their sign
  assert contexts["blocks.0.attn.q:9"] == []  # head 1's queries are zero: never active


def test_document_contexts_and_json_round_trip(doc, tmp_path):
  node = next(n for n in doc["nodes"] if n["id"] == "blocks.0.attn.in:1")
  assert node["rank_by"] == "|value|" and len(node["contexts"]) == 3
  ctx = node["contexts"][0]
  assert ctx["sign"] == (1 if ctx["value"] >= 0 else -1)
  assert len(ctx["text"]) == len(ctx["tokens"]) == len(ctx["acts"])
  assert next(n for n in doc["nodes"] if n["kind"] == "mlp.post")["rank_by"] == "value"
  path = views.write_json(tmp_path / "c.json", doc)
  assert json.loads(path.read_text()) == doc


def test_html_page_is_one_self_contained_file(doc, tmp_path):
  doc = json.loads(json.dumps(doc))
  node = doc["nodes"][0]
  node["contexts"][0]["text"][0] = "<script>alert(1)</script>"
  path = views.write_html(tmp_path / "circuit.html", doc)
  assert [p.name for p in tmp_path.iterdir()] == ["circuit.html"]
  page = path.read_text()
  assert page.count("<svg") == 1 and page.count("</svg>") == 1
  assert page.count("<circle") == doc["n_nodes"]
  assert page.count("<script") == 1  # only the page's own
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
  assert "demo &lt;b&gt;task&lt;/b&gt;" in page and "<b>task" not in page
  urls = set(re.findall(r"https?://[^\s\"'<>)]*", page))
  assert urls <= {"http://www.w3.org/2000/svg"}
  assert "@import" not in page and not re.search(r"<(link|img|iframe)\b", page)
  assert page.count('class="e"') == doc["n_edges"] and "All " in page
  assert "heldout.sufficiency.loss" in page


def test_html_draws_only_the_strongest_edges_when_asked(doc):
  page = views.render_html(doc, max_edges_per_node=1)
  drawn = page.count('class="e"')
  assert 0 < drawn < doc["n_edges"]
  assert f"{drawn} of {doc['n_edges']} edges are drawn" in page


def test_a_document_with_the_old_format_tag_renders_the_same_page(doc):
  assert doc["format"] == "jaxsae-circuit-view/1" and "format_version" not in doc
  old = {**doc, "format": "jaxsae.circuit_view", "format_version": 1}
  assert views.render_html(old) == views.render_html(doc)


def test_show_returns_inline_html(doc, tmp_path):
  shown = views.show(doc)
  assert "<svg" in shown.data and shown.data.count("<circle") == doc["n_nodes"]
  assert "<svg" in views.show(views.write_json(tmp_path / "c.json", doc)).data
  assert "<svg" in views.show(views.write_html(tmp_path / "c.html", doc)).data


def test_bad_input_raises_clear_errors(lm, windows):
  other = TransformerConfig(
    vocab_size=257, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=64, max_len=32
  )
  wrong = make_circuit(other)
  with pytest.raises(JaxsaeError, match="does not fit this model"):
    views.circuit_document(lm, wrong)
  with pytest.raises(JaxsaeError, match="does not fit this model"):
    views.node_contexts(lm, wrong, windows)
  with pytest.raises(JaxsaeError, match="token windows"):
    views.node_contexts(lm, make_circuit(), windows[0])
  with pytest.raises(JaxsaeError, match="at most 32"):
    views.node_contexts(lm, make_circuit(), np.zeros((2, 40), np.int32))
  with pytest.raises(JaxsaeError, match="does not keep"):
    views.circuit_document(lm, make_circuit(), {"blocks.0.attn.in:0": []})
  with pytest.raises(JaxsaeError, match="circuit_document"):
    views.render_html({"format": "something else"})
