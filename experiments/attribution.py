"""An attribution graph of one prompt through a model's transcoders (jaxsae.attribution).

  python -m experiments.attribution --transcoders=CLT_OR_SET --model=MODEL --prompt='x = "a'
  python -m experiments.attribution --transcoders=LAYER0,LAYER1,... --model=gemma-3-270m --bos \
      --skip_first=1 --prompt='The capital of France is'

The dictionaries are read as `experiments.replacement` reads them. Writes to <workdir>:
- graphs/<slug>.json and graphs/graph-metadata.json: the pruned graph in circuit-tracer's
  frontend format (its viewer serves that folder);
- graph.html: the pruned graph drawn by jaxsae's circuit view (one self-contained page);
- results.md / results.jsonl: the graph's size before and after pruning, its replacement and
  completeness scores, the salient logits, and the most influential feature nodes.
"""

import json
import pathlib
import time

import numpy as np
from absl import flags

from jaxsae import cli, tables
from jaxsae.attribution import frontend, view
from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution import prune as prune_lib
from jaxsae.models import pretrained
from jaxsae.sae import zoo

_TRANSCODERS = flags.DEFINE_list("transcoders", None, "A set or CLT, or one transcoder per layer.")
_MODEL = flags.DEFINE_string("model", "default", "A model name or folder (pretrained.load).")
_PROMPT = flags.DEFINE_string("prompt", None, "The text whose next token is attributed.")
_BOS = flags.DEFINE_boolean("bos", False, "Begin with the model's BOS (Gemma, Llama).")
_SKIP_FIRST = flags.DEFINE_integer("skip_first", 0, "Leading positions without feature nodes.")
_MAX_LOGITS = flags.DEFINE_integer("max_logits", 10, "Most logit nodes.")
_PROBABILITY = flags.DEFINE_float("desired_probability", 0.95, "Logits kept up to this total.")
_NODE = flags.DEFINE_float("node_threshold", 0.8, "Share of influence the kept nodes hold.")
_EDGE = flags.DEFINE_float("edge_threshold", 0.98, "Share of edge scores the kept edges hold.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Targets per vector-Jacobian product.")
_SLUG = flags.DEFINE_string("slug", "graph", "The graph's name in the viewer.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/attribution", "Where the results are written.")
flags.mark_flag_as_required("transcoders")
flags.mark_flag_as_required("prompt")


def summary(graph, pruned, scores, seconds: float) -> dict:
  return {
    "tokens": graph.n_pos,
    "features": graph.n_features,
    "nodes": int(graph.adjacency.shape[0]),
    "kept_nodes": int(pruned.node_mask.sum()),
    "kept_edges": int(pruned.edge_mask.sum()),
    "replacement_score": scores["replacement"],
    "completeness_score": scores["completeness"],
    "seconds": seconds,
  }


def top_features(graph, pruned, tokenizer, n: int = 15) -> list[dict]:
  """The kept feature nodes by influence (the smallest cumulative share first)."""
  kept = [i for i in np.nonzero(pruned.node_mask[: graph.n_features])[0]]
  kept.sort(key=lambda i: pruned.cumulative_influence[i])
  rows = []
  for i in kept[:n]:
    layer, pos, index = (int(v) for v in graph.features[i])
    token = tokenizer.decode([int(graph.tokens[pos])])
    rows.append({"layer": layer, "position": pos, "token": token, "feature": index,
                 "activation": float(graph.activations[i]),
                 "cumulative_influence": float(pruned.cumulative_influence[i])})  # fmt: skip
  return rows


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  lm = pretrained.load(_MODEL.value)
  names = _TRANSCODERS.value
  dictionaries = zoo.load_replacement(names[0] if len(names) == 1 else names)
  tokens = np.asarray(lm.tokenizer.encode(_PROMPT.value), np.int32)
  if _BOS.value:
    tokens = np.concatenate([[lm.tokenizer.separator_id], tokens]).astype(np.int32)
  start = time.perf_counter()
  graph = graph_lib.compute(
    lm, dictionaries, tokens, max_logits=_MAX_LOGITS.value,
    desired_probability=_PROBABILITY.value, batch_size=_BATCH.value,
    skip_first=_SKIP_FIRST.value,
  )  # fmt: skip
  seconds = time.perf_counter() - start
  pruned = prune_lib.prune(graph, _NODE.value, _EDGE.value)
  scores = prune_lib.scores(graph)
  scan = ",".join(names)
  doc = frontend.document(
    graph, pruned, lm.tokenizer, slug=_SLUG.value, scan=scan, node_threshold=_NODE.value
  )
  frontend.write(workdir / "graphs", doc)
  overview = summary(graph, pruned, scores, seconds)
  view.write_html(
    workdir / "graph.html", graph, pruned, lm.tokenizer, title=repr(_PROMPT.value),
    model=_MODEL.value, metrics={k: v for k, v in overview.items() if k != "seconds"},
  )  # fmt: skip
  logits = [
    {"token": lm.tokenizer.decode([int(t)]), "probability": float(p)}
    for t, p in zip(graph.logit_tokens, graph.logit_probabilities, strict=True)
  ]
  features = top_features(graph, pruned, lm.tokenizer)
  page = [
    f"# Attribution graph of {_PROMPT.value!r} on {_MODEL.value}",
    f"\nDictionaries: {scan}. Regenerated by `python -m experiments.attribution` with these flags; "
    f"the viewer's files are in `graphs/`.\n",
    tables.markdown([overview]),
    "\n## Salient logits\n",
    tables.markdown(logits),
    "\n## Most influential feature nodes\n",
    tables.markdown(features) if features else "(none kept)",
  ]
  (workdir / "results.md").write_text("\n".join(page) + "\n")
  record = {**overview, "logits": logits, "features": features, "prompt": _PROMPT.value}
  (workdir / "results.jsonl").write_text(json.dumps(record) + "\n")
  print("\n".join(page))


if __name__ == "__main__":
  cli.run(main)
