"""A pruned attribution graph as circuit-tracer's frontend reads it: `<slug>.json` with
`metadata`, `qParams`, `nodes` and `links`, and the folder's `graph-metadata.json` index, so
circuit-tracer's viewer (`circuit_tracer.frontend.local_server`) opens it.

Node ids and fields follow circuit-tracer 0.5's `frontend.graph_models.Node` constructors:
  feature  "{layer}_{index}_{pos}",  feature = Cantor(layer, index), type "cross layer transcoder"
  error    "0_{layer}_{pos}",        feature = −1, type "mlp reconstruction error"
  token    "E_{token id}_{pos}",     layer "E", type "embedding"
  logit    "{L+1}_{token id}_{T−1}", type "logit", clerp 'Output "tok" (p=…)'
`influence` is the node's cumulative influence share (`prune.Pruned.cumulative_influence`);
links run source → target with the adjacency weight. Written by hand: circuit-tracer's writer
needs its torch Graph and a transformers tokenizer.
"""

from __future__ import annotations

import json
import pathlib

from jaxsae.attribution.graph import Graph
from jaxsae.attribution.prune import Pruned


def _cantor(x: int, y: int) -> int:
  return (x + y) * (x + y + 1) // 2 + y


def _token_text(tokenizer, token: int) -> str:
  text = tokenizer.decode([int(token)])
  return text.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def _node(graph: Graph, index: int, pruned: Pruned, tokenizer) -> dict:
  influence = float(pruned.cumulative_influence[index])
  common = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0}
  common |= {"clerp": "", "influence": influence, "activation": None}
  node = graph.node(index)
  layer, pos, idx = node.layer, node.pos, node.index
  if node.kind == "feature":
    return common | {
      "node_id": f"{layer}_{idx}_{pos}", "feature": _cantor(layer, idx),
      "layer": str(layer), "ctx_idx": pos, "feature_type": "cross layer transcoder",
      "jsNodeId": f"{layer}_{idx}-0", "activation": float(graph.activations[index]),
    }  # fmt: skip
  if node.kind == "error":
    return common | {
      "node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer), "ctx_idx": pos,
      "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_{pos}-0",
    }  # fmt: skip
  if node.kind == "token":
    return common | {
      "node_id": f"E_{idx}_{pos}", "feature": pos, "layer": "E", "ctx_idx": pos,
      "feature_type": "embedding", "jsNodeId": f"E_{idx}-{pos}",
    }  # fmt: skip
  prob, logit_layer = float(graph.logit_probabilities[node.rank]), str(graph.n_layers + 1)
  return common | {
    "node_id": f"{logit_layer}_{idx}_{pos}", "feature": idx, "layer": logit_layer,
    "ctx_idx": pos, "feature_type": "logit", "token_prob": prob,
    "is_target_logit": node.rank == 0, "jsNodeId": f"L_{idx}-{pos}", "influence": None,
    "clerp": f'Output "{_token_text(tokenizer, idx)}" (p={prob:.3f})',
  }  # fmt: skip


def document(
  graph: Graph, pruned: Pruned, tokenizer, *, slug: str, scan: str, node_threshold: float = 0.8
) -> dict:
  """The frontend JSON of the kept nodes and edges (tokens and logits always listed)."""
  nodes = {int(i): _node(graph, int(i), pruned, tokenizer) for i in pruned.node_mask.nonzero()[0]}
  targets, sources = pruned.edge_mask.nonzero()
  links = [
    {"source": nodes[s]["node_id"], "target": nodes[t]["node_id"],
     "weight": float(graph.adjacency[t, s])}
    for t, s in zip(targets.tolist(), sources.tolist(), strict=True)
    if s in nodes and t in nodes
  ]  # fmt: skip
  linked = {link["source"] for link in links} | {link["target"] for link in links}
  kept = [
    n
    for n in nodes.values()
    if n["node_id"] in linked or n["feature_type"] in ("embedding", "logit")
  ]
  metadata = {
    "slug": slug, "scan": scan, "transcoder_list": [],
    "prompt_tokens": [_token_text(tokenizer, t) for t in graph.tokens],
    "prompt": tokenizer.decode([int(t) for t in graph.tokens]),
    "node_threshold": node_threshold, "schema_version": 1,
  }  # fmt: skip
  q_params = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
  return {"metadata": metadata, "qParams": q_params, "nodes": kept, "links": links}


def write(folder, doc: dict) -> pathlib.Path:
  """`<folder>/<slug>.json` and the slug's entry in `<folder>/graph-metadata.json`."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  slug = doc["metadata"]["slug"]
  path = folder / f"{slug}.json"
  path.write_text(json.dumps(doc, indent=2))
  index_path = folder / "graph-metadata.json"
  index = json.loads(index_path.read_text()) if index_path.is_file() else {"graphs": []}
  index["graphs"] = [g for g in index["graphs"] if g["slug"] != slug] + [doc["metadata"]]
  index_path.write_text(json.dumps(index, indent=2))
  return path
