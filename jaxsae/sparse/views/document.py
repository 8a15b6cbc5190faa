"""A pruned circuit as a JSON document: its kept nodes (forward order), the edges between them,
its metrics, layout hints for drawing and, optionally, each node's top contexts over token
windows (`node_contexts`). Node ids, the ranking of contexts and the edges: the docstring of
`jaxsae.sparse.views`. `jaxsae.sparse.views.page` draws the document."""

from __future__ import annotations

import functools
import json
import math
import pathlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae import format_tags
from jaxsae.errors import JaxsaeError
from jaxsae.interp.contexts import Context, token_text
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.transformer import SPARSE_SITES, Transformer, run
from jaxsae.sparse import edges as edges_lib
from jaxsae.sparse import nodes as nodes_lib
from jaxsae.sparse.pruned_circuit import Circuit, json_ready

FORMAT = format_tags.tag("circuit-view")
UNSIGNED_KINDS = ("mlp.post",)
IDENTITY_EDGE_KINDS = edges_lib.IDENTITY_KINDS


def node_id(site: str, channel: int) -> str:
  return f"{site}:{int(channel)}"


def ranks_by_magnitude(site: str) -> bool:
  """Whether a site's contexts are ranked by |value| (signed nodes) rather than by value."""
  return nodes_lib.site_kind(site) not in UNSIGNED_KINDS


def _full_kept(lm, circuit: Circuit) -> dict[str, np.ndarray]:
  """The circuit's keep-vectors for every node site of `lm` (absent sites: nothing kept)."""
  try:
    nodes_lib.check_masks(lm.config, circuit.kept)
    nodes_lib.check_masks(lm.config, circuit.scores)
  except JaxsaeError as e:
    c = lm.config
    raise JaxsaeError(
      f"the circuit for task {circuit.task!r} (model {circuit.model!r}) does not fit this model "
      f"(d_model {c.d_model}, {c.n_layers} layers, {c.n_heads} heads of {c.d_head}, d_mlp "
      f"{c.d_mlp}): {e}. Pass the model the circuit was pruned from"
    ) from e
  return {
    s: np.asarray(circuit.kept[s], bool)
    if s in circuit.kept
    else np.zeros(nodes_lib.site_width(lm.config, s), bool)
    for s in nodes_lib.node_sites(lm.config)
  }


@functools.lru_cache(maxsize=8)
def _scan_fn(config, sites: tuple[str, ...], before: int, after: int):
  """Jitted (params, tokens, indices, signed) -> per window and node: best score, its position
  and the node's activations at offsets -before..after of it."""
  model = Transformer(config)

  def fn(params, tokens_BxT, indices, signed_N):
    _, captured = run(model, params, tokens_BxT, capture=sites)
    x = jnp.concatenate(
      [
        nodes_lib.flat_channels(s, captured[s])[..., idx]
        for s, idx in zip(sites, indices, strict=True)
      ],
      axis=-1,
    ).astype(jnp.float32)  # (B, T, N)
    score = jnp.where(signed_N, jnp.abs(x), x)
    pos_BxN = jnp.argmax(score, axis=1)
    best_BxN = jnp.take_along_axis(score, pos_BxN[:, None], axis=1)[:, 0]
    grid = pos_BxN[:, None, :] + jnp.arange(-before, after + 1)[None, :, None]  # (B, W, N)
    inside = (grid >= 0) & (grid < x.shape[1])
    ctx = jnp.take_along_axis(x, jnp.clip(grid, 0, x.shape[1] - 1), axis=1)
    return best_BxN, pos_BxN, jnp.where(inside, ctx, 0.0)

  return jax.jit(fn)


def node_contexts(
  lm,
  circuit: Circuit,
  windows_NxT,
  top: int = 5,
  *,
  before: int = 24,
  after: int = 4,
  batch_size: int = 16,
) -> dict[str, list[Context]]:
  """{node id: up to `top` Contexts, strongest first} for every kept node: over the windows,
  each window's best position (largest value, or |value| where `ranks_by_magnitude`), the `top`
  best windows, with `before` tokens before and `after` after the focus; windows where the node
  is exactly 0 throughout give none. One jitted forward per `batch_size` windows captures only
  the circuit's sites."""
  kept = _full_kept(lm, circuit)
  windows_NxT = np.asarray(windows_NxT)
  c = lm.config
  if windows_NxT.ndim != 2 or windows_NxT.size == 0:
    raise JaxsaeError(
      f"node_contexts needs a non-empty (N, T) array of token windows, got shape "
      f"{windows_NxT.shape}; e.g. model_corpus.corpus_windows(lm)"
    )
  if windows_NxT.shape[1] > c.max_len:
    raise JaxsaeError(
      f"windows have {windows_NxT.shape[1]} tokens, the model takes at most {c.max_len}; "
      "pass shorter windows"
    )
  if windows_NxT.min() < 0 or windows_NxT.max() >= c.vocab_size:
    raise JaxsaeError(f"windows hold token ids outside [0, {c.vocab_size}); tokenize with lm")
  if top < 1 or before < 0 or after < 0 or batch_size < 1:
    raise JaxsaeError("top and batch_size must be at least 1, before and after at least 0")
  sites = tuple(s for s, k in kept.items() if k.any())
  if not sites:
    return {}
  indices = tuple(jnp.asarray(np.flatnonzero(kept[s]), jnp.int32) for s in sites)
  ids = [node_id(s, ch) for s in sites for ch in np.flatnonzero(kept[s])]
  signed = np.concatenate([np.full(int(kept[s].sum()), ranks_by_magnitude(s)) for s in sites])
  fn = _scan_fn(c, sites, before, after)
  n, T = len(ids), windows_NxT.shape[1]
  best = np.full((0, n), -np.inf, np.float32)
  win = np.zeros((0, n), np.int64)
  pos = np.zeros((0, n), np.int64)
  ctx = np.zeros((0, before + after + 1, n), np.float32)
  B = min(batch_size, len(windows_NxT))
  for lo in range(0, len(windows_NxT), B):
    chunk = windows_NxT[lo : lo + B].astype(np.int32)
    rows = len(chunk)
    if rows < B:  # Pad to one batch shape, so the function compiles once.
      chunk = np.concatenate([chunk, np.zeros((B - rows, T), np.int32)])
    b_best, b_pos, b_ctx = (np.asarray(a) for a in fn(lm.params, chunk, indices, signed))
    b_best = np.where(np.arange(B)[:, None] < rows, b_best, -np.inf)
    cat_best = np.concatenate([best, b_best])
    order = np.argsort(-cat_best, axis=0, kind="stable")[:top]
    best = np.take_along_axis(cat_best, order, 0)
    b_win = np.broadcast_to(lo + np.arange(B)[:, None], (B, n))
    win = np.take_along_axis(np.concatenate([win, b_win]), order, 0)
    pos = np.take_along_axis(np.concatenate([pos, b_pos.astype(np.int64)]), order, 0)
    ctx = np.take_along_axis(np.concatenate([ctx, b_ctx]), order[:, None, :], 0)
  out = {}
  for j, nid in enumerate(ids):
    found = []
    for i in np.flatnonzero(np.isfinite(best[:, j])):
      w, p = int(win[i, j]), int(pos[i, j])
      start, stop = max(0, p - before), min(T, p + after + 1)
      acts = ctx[i, start - (p - before) : stop - (p - before), j]
      if acts[p - start] == 0:  # Never active in this window (AbsTopK zeros): no context.
        continue
      found.append(
        Context(
          tokens=[int(t) for t in windows_NxT[w, start:stop]],
          activations=[float(a) for a in acts],
          focus=p - start,
          window=w,
          position=p,
        )
      )
    out[nid] = found
  return out


def _finite(value):
  """JSON-safe copy: non-finite floats become None."""
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_finite(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _context_doc(ctx: Context, tokenizer) -> dict:
  value = ctx.value
  return {
    "window": ctx.window,
    "position": ctx.position,
    "focus": ctx.focus,
    "value": value,
    "sign": 1 if value >= 0 else -1,
    "tokens": list(ctx.tokens),
    "text": [token_text(tokenizer, t) for t in ctx.tokens],
    "acts": [float(f"{a:.5g}") for a in ctx.activations],
  }


def circuit_document(lm, circuit: Circuit, contexts: Mapping[str, list[Context]] | None = None):
  """A JSON-ready dict of the circuit: its nodes (forward order), edges (`edges.edge_list`
  order, ids of kept nodes), metrics, layout hints and, if given, each node's contexts."""
  kept = _full_kept(lm, circuit)
  c = lm.config
  unknown = sorted(
    set(contexts or {}) - {node_id(s, ch) for s, k in kept.items() for ch in np.flatnonzero(k)}
  )
  if unknown:
    raise JaxsaeError(
      f"contexts name {len(unknown)} nodes the circuit does not keep (e.g. {unknown[0]!r}); "
      "pass node_contexts(lm, circuit, windows) for this circuit"
    )
  nodes = []
  for site, k in kept.items():
    layer, kind = nodes_lib.site_layer(site), nodes_lib.site_kind(site)
    scores = circuit.scores.get(site)
    for ch in np.flatnonzero(k):
      nid = node_id(site, ch)
      node = {
        "id": nid,
        "site": site,
        "layer": layer,
        "kind": kind,
        "channel": int(ch),
        "score": None if scores is None else float(np.asarray(scores)[ch]),
        "rank_by": "|value|" if ranks_by_magnitude(site) else "value",
        "column": c.n_layers if layer is None else layer,
        "band": kind,
      }
      if kind in hooks_lib.PER_HEAD_SITES:
        node["head"], node["dim"] = int(ch) // c.d_head, int(ch) % c.d_head
      if contexts is not None:
        node["contexts"] = [_context_doc(x, lm.tokenizer) for x in contexts.get(nid, [])]
      nodes.append(node)
  edges = [
    {
      "src": node_id(e.src, e.src_channel),
      "dst": node_id(e.dst, e.dst_channel),
      "weight": float(e.weight),
      "kind": e.kind,
    }
    for e in edges_lib.edge_list(lm.params, c, kept)
  ]
  edge_counts = {}
  for e in edges:
    edge_counts[e["kind"]] = edge_counts.get(e["kind"], 0) + 1
  doc = {
    "format": FORMAT,
    "task": circuit.task,
    "model": circuit.model,
    "config": {
      k: getattr(c, k) for k in ("d_model", "n_layers", "n_heads", "d_head", "d_mlp", "vocab_size")
    },
    "metrics": json_ready(circuit.metrics),
    "n_nodes": len(nodes),
    "n_edges": len(edges),
    "edge_counts": edge_counts,
    "nodes": nodes,
    "edges": edges,
    "layout": {
      "columns": [f"layer {i}" for i in range(c.n_layers)] + ["final"],
      "bands": list(SPARSE_SITES) + [nodes_lib.FINAL_SITE],
      "node_column": "node.column: its layer; the final residual after the last layer",
      "node_band": "node.band: its site kind, bands top to bottom in forward order",
      "identity_edges": list(IDENTITY_EDGE_KINDS),
    },
  }
  return _finite(doc)


def write_json(path, doc: Mapping) -> pathlib.Path:
  """Write `doc` (from `circuit_document`) as strict JSON."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
    json.dumps(_finite(json_ready(doc)), allow_nan=False, separators=(",", ":")) + "\n"
  )
  return path
