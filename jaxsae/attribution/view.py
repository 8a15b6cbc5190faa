"""A pruned attribution graph drawn by the circuit view (`jaxsae.sparse.views.page`): one
self-contained HTML page with an inline SVG, the same page the weight-sparse circuits use.

Columns: the prompt's tokens, then one per layer (its feature and error nodes), then the logits;
within a layer, a band for features and one for errors. Circles are labelled with the feature
index (features), the position (tokens, errors) or the token id (logits); hovering gives the
node's id, position and activation. Edges are the kept direct effects (`prune`), red positive and
blue negative, width ∝ |weight|.
"""

from __future__ import annotations

import pathlib

from jaxsae.attribution.graph import Graph
from jaxsae.attribution.prune import Pruned
from jaxsae.sparse import nodes as nodes_lib
from jaxsae.sparse.views import document, page

BANDS = ("embedding", "feature", "error", nodes_lib.FINAL_SITE)


def _node(graph: Graph, i: int, pruned: Pruned, tokenizer) -> dict:
  score = float(1.0 - pruned.cumulative_influence[i])
  node = graph.node(i)
  layer, pos, idx = node.layer, node.pos, node.index
  if node.kind == "feature":
    token = tokenizer.decode([int(graph.tokens[pos])])
    return {"id": f"L{layer} f{idx} @{pos} {token!r} a={graph.activations[i]:.3g}",
            "kind": "feature", "channel": idx, "column": layer + 1, "band": "feature",
            "layer": layer, "score": score}  # fmt: skip
  if node.kind == "error":
    return {"id": f"L{layer} error @{pos}", "kind": "error", "channel": pos,
            "column": layer + 1, "band": "error", "layer": layer, "score": score}  # fmt: skip
  if node.kind == "token":
    return {"id": f"token @{pos} {tokenizer.decode([idx])!r}", "kind": "embedding",
            "channel": pos, "column": 0, "band": "embedding", "layer": None,
            "score": score}  # fmt: skip
  prob = graph.logit_probabilities[node.rank]
  return {"id": f"logit {idx} {tokenizer.decode([idx])!r} p={prob:.3f}",
          "kind": "logit", "channel": idx, "column": graph.n_layers + 1,
          "band": nodes_lib.FINAL_SITE, "layer": None, "score": None}  # fmt: skip


def circuit_document(graph: Graph, pruned: Pruned, tokenizer, *, title: str, model: str) -> dict:
  """The circuit view's document of the kept nodes and edges."""
  kept = [int(i) for i in pruned.node_mask.nonzero()[0]]
  nodes = {i: _node(graph, i, pruned, tokenizer) for i in kept}
  targets, sources = pruned.edge_mask.nonzero()
  edges = [
    {"src": nodes[s]["id"], "dst": nodes[t]["id"], "weight": float(graph.adjacency[t, s]),
     "kind": "direct effect"}
    for t, s in zip(targets.tolist(), sources.tolist(), strict=True)
    if s in nodes and t in nodes
  ]  # fmt: skip
  return {
    "format": document.FORMAT,
    "task": title,
    "model": model,
    "metrics": {},
    "n_nodes": len(nodes),
    "n_edges": len(edges),
    "edge_counts": {"direct effect": len(edges)},
    "nodes": list(nodes.values()),
    "edges": edges,
    "layout": {
      "columns": ["tokens"] + [f"layer {i}" for i in range(graph.n_layers)] + ["logits"],
      "bands": list(BANDS),
      "identity_edges": [],
    },
  }


def write_html(path, graph: Graph, pruned: Pruned, tokenizer, *, title: str, model: str, **options):
  """The page as one HTML file (options: `page.render_html`'s)."""
  doc = circuit_document(graph, pruned, tokenizer, title=title, model=model)
  doc["metrics"] = options.pop("metrics", {})
  return page.write_html(pathlib.Path(path), doc, **options)
