"""A circuit document (`jaxsae.sparse.views.document`) drawn as one self-contained HTML page: an
inline SVG (a column per layer and the final residual at the right; within a column one band
per site in forward order), a legend, the metrics and, for a clicked node, its top contexts. No
script, style or font is fetched. `show` returns it for Colab and Jupyter."""

from __future__ import annotations

import html
import itertools
import json
import math
import pathlib
from collections.abc import Mapping

from jaxsae import format_tags
from jaxsae.errors import JaxsaeError
from jaxsae.sparse import nodes as nodes_lib
from jaxsae.sparse.views.document import IDENTITY_EDGE_KINDS

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
  format_tags.check(doc, "circuit-view", "the document", "build it with views.circuit_document")
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
