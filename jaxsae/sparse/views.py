"""Views of a pruned circuit: its nodes' top contexts, a JSON document and a static HTML page.

    node id       "{site}:{channel}", e.g. "blocks.0.mlp.post:17" (sites as `nodes.node_sites`)
    ranking       mlp.post (after the GELU) by value; every other site by |value|, sign recorded
    context       at most one per window: the window's best position (the focus), `before`
                  tokens before it and `after` after it, with the node's activation at each
    edges         `edges.edge_list` over the kept nodes (sites the circuit leaves out: none kept)

The page is one self-contained HTML file: an inline SVG (a column per layer and the final
residual at the right; within a column one band per site in forward order), a legend, the
metrics and, for a clicked node, its top contexts. No script, style or font is fetched.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import math
import pathlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.interp.contexts import Context, token_text
from jaxsae.models.transformer import SPARSE_SITES, Transformer, run
from jaxsae.sparse import edges as edges_lib
from jaxsae.sparse import nodes as nodes_lib
from jaxsae.sparse.circuit import Circuit, json_ready

FORMAT = "jaxsae.circuit_view"
FORMAT_VERSION = 1
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


def corpus_windows(lm, n: int = 128, seq_len: int | None = None, split: str = "validation", seed=0):
  """(n, seq_len) int32 token windows drawn (sorted) from a split of the corpus the model was
  trained on (its metadata; else the standard library), packed as in training."""
  from jaxsae.text import corpus as corpus_lib
  from jaxsae.text import pipeline

  meta = lm.metadata or {}
  seq_len = int(seq_len or min(lm.config.max_len, int(meta.get("seq_len", lm.config.max_len))))
  found = corpus_lib.from_config(meta)
  windows = pipeline.load_split(found, split, lm.tokenizer, seq_len).windows
  return pipeline.sample_windows(windows, n, seed, split)[:, :seq_len]


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
      f"{windows_NxT.shape}; e.g. views.corpus_windows(lm)"
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
      if kind in nodes_lib.PER_HEAD_SITES:
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
    "format_version": FORMAT_VERSION,
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


# ----------------------------------------------------------------------------------- HTML page

_PITCH, _RADIUS, _PER_ROW, _GAP, _LEFT, _TOP = 22, 8, 10, 110, 80, 34
_KIND_COLOURS = {
  "attn.in": "#9ecae1",
  "attn.q": "#6baed6",
  "attn.k": "#4292c6",
  "attn.v": "#2171b5",
  "attn.z": "#08519c",
  "mlp.in": "#a1d99b",
  "mlp.post": "#41ab5d",
  "mlp.out": "#006d2c",
  nodes_lib.FINAL_SITE: "#969696",
}
_POSITIVE, _NEGATIVE, _IDENTITY = "#d6604d", "#4393c3", "#888"

_CSS = """
.cv { font-family: system-ui, sans-serif; color: #222; }
.cv table { border-collapse: collapse; font-size: 13px; } .cv td { padding: 1px 8px; }
.cv tr:nth-child(even) td { background: #f4f4f4; }
.cv .cols { display: flex; gap: 16px; align-items: flex-start; }
.cv .graph { overflow: auto; max-width: 72vw; border: 1px solid #ddd; }
.cv .info { position: sticky; top: 0; max-height: 95vh; overflow: auto; min-width: 360px;
  flex: 1; font-size: 13px; }
.cv svg text { font-size: 8px; pointer-events: none; }
.cv svg .lab { font-size: 12px; fill: #444; } .cv svg .band { font-size: 10px; fill: #777; }
.cv svg circle { cursor: pointer; stroke: #333; stroke-width: 0.6; }
.cv svg path.e { fill: none; opacity: 0.55; }
.cv svg.sel path.e { opacity: 0.05; } .cv svg.sel path.e.hl { opacity: 1; }
.cv svg.sel circle { opacity: 0.35; } .cv svg.sel circle.hl { opacity: 1; }
.cv svg circle.on { stroke: #000; stroke-width: 2.5; opacity: 1; }
.cv .ctx { font-family: ui-monospace, monospace; white-space: pre; margin: 2px 0; line-height: 1.6; }
.cv .ctx .v { display: inline-block; width: 5.5em; color: #666; }
.cv .ctx .f { outline: 1.5px solid #000; }
.cv .sw { display: inline-block; width: 12px; height: 12px; border-radius: 6px;
  vertical-align: middle; margin: 0 3px 0 10px; }
.cv .ln { display: inline-block; width: 26px; vertical-align: middle; margin: 0 3px 0 10px; }
"""

_JS = """
(function () {
  const root = document.getElementById(ROOT), svg = root.querySelector('svg');
  const panel = root.querySelector('.info'), intro = panel.innerHTML;
  let on = null;
  function pick(i) {
    svg.querySelectorAll('.hl, .on').forEach(el => el.classList.remove('hl', 'on'));
    if (on === i) { on = null; svg.classList.remove('sel'); panel.innerHTML = intro; return; }
    on = i; svg.classList.add('sel');
    const me = svg.querySelector('circle[data-i="' + i + '"]');
    me.classList.add('on', 'hl');
    svg.querySelectorAll('path.e').forEach(p => {
      if (p.dataset.s === i || p.dataset.d === i) {
        p.classList.add('hl');
        const other = p.dataset.s === i ? p.dataset.d : p.dataset.s;
        svg.querySelector('circle[data-i="' + other + '"]').classList.add('hl');
      }
    });
    panel.innerHTML = root.querySelector('.details [data-i="' + i + '"]').innerHTML;
  }
  svg.querySelectorAll('circle[data-i]').forEach(c => c.addEventListener('click', () => pick(c.dataset.i)));
})();
"""


def _esc(text) -> str:
  return html.escape(str(text), quote=True)


def _fmt(value) -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _metric_rows(metrics, prefix: str = "") -> list[tuple[str, str]]:
  rows = []
  for key, value in metrics.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      rows += _metric_rows(value, name + ".")
    elif isinstance(value, list) and len(value) > 6:
      rows.append((name, f"({len(value)} entries)"))
    else:
      rows.append((name, _fmt(value)))
  return rows


def _select_edges(doc, per_node: int, limit: int) -> list[int]:
  """Indices of the edges drawn: identity edges, and each weighted edge that is among the
  `per_node` strongest of its source's or its destination's weighted edges; at most `limit`
  (the strongest) in all."""
  weighted = [i for i, e in enumerate(doc["edges"]) if e["kind"] not in IDENTITY_EDGE_KINDS]
  strength = sorted(weighted, key=lambda i: -abs(doc["edges"][i]["weight"]))
  used: dict[tuple[str, str], int] = {}
  keep = set()
  for i in strength:
    e = doc["edges"][i]
    a, b = used.get(("s", e["src"]), 0), used.get(("d", e["dst"]), 0)
    if a < per_node or b < per_node:
      keep.add(i)
    used[("s", e["src"])], used[("d", e["dst"])] = a + 1, b + 1
  identity = [i for i, e in enumerate(doc["edges"]) if e["kind"] in IDENTITY_EDGE_KINDS]
  ordered = identity + [i for i in strength if i in keep]
  return sorted(ordered[:limit])


def _layout(doc):
  """({node id: (x, y)}, bands shown, svg width, svg height, [(x, y, class, text)] labels)."""
  n_cols = len(doc["layout"]["columns"])
  by_cell: dict[tuple[int, str], list[dict]] = {}
  for node in doc["nodes"]:
    by_cell.setdefault((node["column"], node["band"]), []).append(node)
  block_bands = [b for b in doc["layout"]["bands"] if b != nodes_lib.FINAL_SITE]
  bands = [b for b in block_bands if any(k[1] == b for k in by_cell)]
  col_w = _PER_ROW * _PITCH + _GAP
  labels, centres, y = [], {}, _TOP
  for band in bands:
    rows = max(math.ceil(len(v) / _PER_ROW) for k, v in by_cell.items() if k[1] == band)
    labels.append((8, y + 18, "band", band))
    for (col, b), members in by_cell.items():
      if b == band:
        for i, node in enumerate(members):
          centres[node["id"]] = (
            _LEFT + col * col_w + (i % _PER_ROW + 0.5) * _PITCH,
            y + 6 + (i // _PER_ROW + 0.5) * _PITCH,
          )
    y += rows * _PITCH + 16
  finals = by_cell.get((n_cols - 1, nodes_lib.FINAL_SITE), [])
  for i, node in enumerate(finals):
    centres[node["id"]] = (
      _LEFT + (n_cols - 1) * col_w + (i % _PER_ROW + 0.5) * _PITCH,
      _TOP + 6 + (i // _PER_ROW + 0.5) * _PITCH,
    )
  y = max(y, _TOP + 6 + math.ceil(len(finals) / _PER_ROW) * _PITCH + 16)
  for col, name in enumerate(doc["layout"]["columns"]):
    labels.append((_LEFT + col * col_w, 20, "lab", name))
  return centres, bands, _LEFT + n_cols * col_w, y + 10, labels


def _edge_path(a, b) -> str:
  (x1, y1), (x2, y2) = a, b
  if abs(x2 - x1) > _PER_ROW * _PITCH:  # Across columns: leave and enter horizontally.
    xm = (x1 + x2) / 2
    return f"M{x1:.1f} {y1:.1f}C{xm:.1f} {y1:.1f},{xm:.1f} {y2:.1f},{x2:.1f} {y2:.1f}"
  ym = (y1 + y2) / 2
  return f"M{x1:.1f} {y1:.1f}C{x1:.1f} {ym:.1f},{x2:.1f} {ym:.1f},{x2:.1f} {y2:.1f}"


def _context_html(ctx: Mapping, peak: float) -> str:
  spans = []
  for i, (text, act) in enumerate(zip(ctx["text"], ctx["acts"], strict=True)):
    act = act or 0.0
    alpha = min(abs(act) / peak, 1.0) if peak > 0 else 0.0
    colour = "214, 96, 77" if act >= 0 else "67, 147, 195"
    focus = ' class="f"' if i == ctx["focus"] else ""
    if act:
      spans.append(
        f'<span{focus} style="background: rgba({colour}, {alpha:.2f})" title="{act:.4g}">'
        f"{_esc(text)}</span>"
      )
    else:
      spans.append(f"<span{focus}>{_esc(text)}</span>" if focus else _esc(text))
  value = ctx["value"]
  label = "–" if value is None else f"{value:+.4g}"
  return f'<div class="ctx"><span class="v">{label}</span>{"".join(spans)}</div>'


def _node_details(node: Mapping, degree: tuple[int, int]) -> str:
  where = f"head {node['head']}, dim {node['dim']}" if "head" in node else ""
  score = "–" if node.get("score") is None else f"{node['score']:.4g}"
  parts = [
    f"<h3>{_esc(node['id'])}</h3>",
    f"<p>{_esc(node['kind'])}, channel {node['channel']} {_esc(where)}<br>"
    f"score {score} · {degree[0]} edges in · {degree[1]} edges out</p>",
  ]
  if "contexts" not in node:
    parts.append("<p>(no contexts in this document; pass node_contexts to circuit_document)</p>")
  elif not node["contexts"]:
    parts.append("<p>(no contexts)</p>")
  else:
    peak = max(abs(a or 0.0) for x in node["contexts"] for a in x["acts"])
    parts.append(f"<p>Top contexts, ranked by {_esc(node.get('rank_by', 'value'))}:</p>")
    parts += [_context_html(x, peak) for x in node["contexts"]]
  return "".join(parts)


def render_html(
  doc: Mapping, *, root_id: str = "cv", max_edges_per_node: int = 12, max_edges: int = 2000
) -> str:
  """The page body (a <div> holding its style, svg, legend, metrics and script) for `doc`."""
  if doc.get("format") != FORMAT:
    raise JaxsaeError(f"not a {FORMAT} document; build it with views.circuit_document")
  nodes, edges = doc["nodes"], doc["edges"]
  index = {node["id"]: i for i, node in enumerate(nodes)}
  if len(index) != len(nodes):
    raise JaxsaeError("the document has two nodes with the same id; rebuild it")
  bad = [e for e in edges if e["src"] not in index or e["dst"] not in index]
  if bad:
    raise JaxsaeError(f"edge {bad[0]['src']} -> {bad[0]['dst']} names a node not in the document")
  centres, _, width, height, labels = _layout(doc)
  drawn = _select_edges(doc, max_edges_per_node, max_edges)
  peak = max(
    [abs(edges[i]["weight"]) for i in drawn if edges[i]["kind"] not in IDENTITY_EDGE_KINDS] or [1.0]
  )
  svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}">']
  for x, y, cls, text in labels:
    svg.append(f'<text class="{cls}" x="{x}" y="{y}">{_esc(text)}</text>')
  for i in drawn:
    e = edges[i]
    path = _edge_path(centres[e["src"]], centres[e["dst"]])
    if e["kind"] in IDENTITY_EDGE_KINDS:
      style = f'stroke="{_IDENTITY}" stroke-width="0.8" stroke-dasharray="3 2"'
    else:
      w = 0.4 + 3.6 * abs(e["weight"]) / peak
      colour = _POSITIVE if e["weight"] >= 0 else _NEGATIVE
      style = f'stroke="{colour}" stroke-width="{w:.2f}"'
    svg.append(
      f'<path class="e" data-s="{index[e["src"]]}" data-d="{index[e["dst"]]}" d="{path}" {style}>'
      f"<title>{_esc(e['src'])} → {_esc(e['dst'])}: {e['weight']:+.4g} ({_esc(e['kind'])})"
      "</title></path>"
    )
  degree = {nid: [0, 0] for nid in index}
  for e in edges:
    degree[e["dst"]][0] += 1
    degree[e["src"]][1] += 1
  details = []
  for i, node in enumerate(nodes):
    x, y = centres[node["id"]]
    colour = _KIND_COLOURS.get(node["kind"], "#ccc")
    score = "" if node.get("score") is None else f" · score {node['score']:.3g}"
    svg.append(
      f'<circle data-i="{i}" cx="{x:.1f}" cy="{y:.1f}" r="{_RADIUS}" fill="{colour}">'
      f"<title>{_esc(node['id'])}{score}</title></circle>"
      f'<text x="{x:.1f}" y="{y + 2.8:.1f}" text-anchor="middle">{node["channel"]}</text>'
    )
    details.append(f'<div data-i="{i}">{_node_details(node, tuple(degree[node["id"]]))}</div>')
  svg.append("</svg>")
  metrics = [
    ("task", doc["task"]),
    ("model", doc["model"]),
    ("nodes", doc["n_nodes"]),
    ("edges", doc["n_edges"]),
  ]
  metrics += [(f"edges {k}", v) for k, v in sorted(doc.get("edge_counts", {}).items())]
  metrics += _metric_rows(doc.get("metrics", {}))
  table = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_fmt(v))}</td></tr>" for k, v in metrics)
  shown = (
    f"All {len(edges)} edges are drawn."
    if len(drawn) == len(edges)
    else f"{len(drawn)} of {len(edges)} edges are drawn: identity edges and, for every node, its "
    f"{max_edges_per_node} strongest weighted edges in and out"
    + (f", at most {max_edges} in all" if len(drawn) == max_edges else "")
    + "; the JSON document lists them all."
  )
  swatches = "".join(
    f'<span class="sw" style="background: {colour}"></span>{_esc(kind)}'
    for kind, colour in _KIND_COLOURS.items()
  )
  legend = (
    f"<p>Nodes (circles, labelled with their channel): {swatches}</p><p>Edges: "
    f'<span class="ln" style="border-top: 3px solid {_POSITIVE}"></span>positive weight'
    f'<span class="ln" style="border-top: 3px solid {_NEGATIVE}"></span>negative weight'
    f'<span class="ln" style="border-top: 1px dashed {_IDENTITY}"></span>identity '
    f"(v→z, residual); stroke width ∝ |weight| (largest drawn {peak:.3g}). {_esc(shown)}</p>"
  )
  intro = (
    "<p>Click a node to see its top-activating contexts and highlight its edges; click it "
    "again to clear. Hover a node or an edge for its id and weight.</p>"
  )
  title = f"Circuit: {doc['task']} · {doc['model']}"
  script = _JS.replace("ROOT", json.dumps(root_id).replace("<", "\\u003c"))
  return (
    f'<div class="cv" id="{_esc(root_id)}"><style>{_CSS}</style><h2>{_esc(title)}</h2>'
    f"<table>{table}</table>{legend}"
    f'<div class="cols"><div class="graph">{"".join(svg)}</div>'
    f'<div class="info">{intro}</div></div>'
    f'<div class="details" hidden>{"".join(details)}</div><script>{script}</script></div>'
  )


def write_html(path, doc: Mapping, **options) -> pathlib.Path:
  """Write the page for `doc` as one self-contained HTML file (options: `render_html`'s)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  title = _esc(f"Circuit: {doc.get('task')} · {doc.get('model')}")
  body = render_html(doc, **options)
  path.write_text(
    f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>'
    f"<body>\n{body}\n</body></html>\n",
    encoding="utf-8",
  )
  return path


_shown = itertools.count()


def show(path_or_doc, **options):
  """The circuit page as an `IPython.display.HTML`, for Colab and Jupyter: pass a document, its
  JSON file or an HTML file `write_html` wrote."""
  try:
    from IPython.display import HTML
  except ImportError as e:
    raise JaxsaeError(
      "views.show needs IPython (Jupyter, Colab); install ipython or open the file write_html "
      "writes in a browser"
    ) from e
  if isinstance(path_or_doc, Mapping):
    return HTML(render_html(path_or_doc, root_id=f"cv{next(_shown)}", **options))
  path = pathlib.Path(path_or_doc)
  if not path.is_file():
    raise JaxsaeError(f"no file at {path}; pass a document, or a .json or .html file views wrote")
  if path.suffix == ".json":
    try:
      doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise JaxsaeError(f"{path} is not valid JSON ({e}); write it with views.write_json") from e
    return HTML(render_html(doc, root_id=f"cv{next(_shown)}", **options))
  return HTML(path.read_text(encoding="utf-8"))
