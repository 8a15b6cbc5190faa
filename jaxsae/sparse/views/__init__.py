"""Views of a pruned circuit: a JSON document of its nodes, edges and top contexts
(`document`), and that document drawn as one static HTML/SVG page (`page`).

    node id       "{site}:{channel}", e.g. "blocks.0.mlp.post:17" (sites as `nodes.node_sites`)
    ranking       mlp.post (after the GELU) by value; every other site by |value|, sign recorded
    context       at most one per window: the window's best position (the focus), `before`
                  tokens before it and `after` after it, with the node's activation at each
    edges         `edges.edge_list` over the kept nodes (sites the circuit leaves out: none kept)

The page is one self-contained HTML file: an inline SVG (a column per layer and the final
residual at the right; within a column one band per site in forward order), a legend, the
metrics and, for a clicked node, its top contexts. No script, style or font is fetched.
`show` displays it in a notebook. Windows of the model's own corpus to find contexts in:
`jaxsae.text.model_corpus.corpus_windows`.
"""

from jaxsae.sparse.views.document import (
  FORMAT,
  IDENTITY_EDGE_KINDS,
  UNSIGNED_KINDS,
  circuit_document,
  node_contexts,
  node_id,
  ranks_by_magnitude,
  write_json,
)
from jaxsae.sparse.views.page import render_html, show, write_html

__all__ = [
  "FORMAT",
  "IDENTITY_EDGE_KINDS",
  "UNSIGNED_KINDS",
  "circuit_document",
  "node_contexts",
  "node_id",
  "ranks_by_magnitude",
  "render_html",
  "show",
  "write_html",
  "write_json",
]
