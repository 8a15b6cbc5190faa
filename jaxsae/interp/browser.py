"""A static HTML feature browser: an index of latents and one page per latent.

    logit weights of latent i = W_dec[i] · W_U   (top and bottom k tokens; the final norm is
                                                  left out, as in Anthropic's and Neuronpedia's)
    W_U = embeddingᵀ (tied embeddings) or the unembed kernel (D×V)
    token background ∝ activation / the latent's largest activation among its contexts

Pages are plain HTML and CSS with one small inline script to sort the index; nothing is loaded
from the network. Every token and text is HTML-escaped; spaces show as ·, newlines as ⏎.
"""

from __future__ import annotations

import dataclasses
import html
import math
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.interp.contexts import Context, LatentCodesFn, SparseCodes, contexts, token_text
from jaxsae.text.tokenizer import Tokenizer

if TYPE_CHECKING:
  from jaxsae.models.language_model import LanguageModel


class LogitWeights(NamedTuple):
  """Top and bottom k tokens of each latent's decoder direction through the unembedding."""

  top_ids: np.ndarray  # (M, k), largest first
  top_values: np.ndarray
  bottom_ids: np.ndarray  # (M, k), most negative first
  bottom_values: np.ndarray


def decoder_logits(W_dec_MxD, unembed_DxV, k: int = 10, block: int = 1024) -> LogitWeights:
  """Top-k and bottom-k tokens of W_dec · W_U per latent, computed `block` latents at a time."""
  W_dec_MxD = np.asarray(W_dec_MxD, np.float32)
  unembed_DxV = np.asarray(unembed_DxV, np.float32)
  if W_dec_MxD.ndim != 2 or unembed_DxV.ndim != 2 or W_dec_MxD.shape[1] != unembed_DxV.shape[0]:
    raise JaxsaeError(
      f"W_dec {W_dec_MxD.shape} and unembedding {unembed_DxV.shape} do not chain; pass W_dec as "
      "(latents, d_model) and the unembedding as (d_model, vocab), e.g. `unembedding(lm)`"
    )
  k = min(k, unembed_DxV.shape[1])
  out = [[], [], [], []]
  for lo in range(0, len(W_dec_MxD), block):
    logits_BxV = W_dec_MxD[lo : lo + block] @ unembed_DxV
    for sign, (ids_out, values_out) in ((1, out[:2]), (-1, out[2:])):
      part = np.argpartition(-sign * logits_BxV, k - 1, axis=1)[:, :k]
      values = np.take_along_axis(logits_BxV, part, 1)
      order = np.argsort(-sign * values, axis=1, kind="stable")
      ids_out.append(np.take_along_axis(part, order, 1))
      values_out.append(np.take_along_axis(values, order, 1))
  return LogitWeights(*(np.concatenate(parts) for parts in out))


def unembedding(lm: LanguageModel) -> np.ndarray:
  """The (d_model, vocab) unembedding of a `LanguageModel`: embeddingᵀ if tied."""
  from flax import linen as nn

  params = nn.meta.unbox(lm.params)
  if lm.config.tied_embeddings:
    return np.asarray(params["embed"]["embedding"], np.float32).T
  return np.asarray(params["unembed"]["kernel"], np.float32)


@dataclasses.dataclass
class LatentCard:
  """What a latent's page shows. `quantile_contexts` has one list per activation-quantile bin,
  lowest bin first (as `SparseCodes.quantile_samples` returns them)."""

  latent: int
  density: float
  scores: dict[str, float] = dataclasses.field(default_factory=dict)
  top_contexts: list[Context] = dataclasses.field(default_factory=list)
  quantile_contexts: list[list[Context]] = dataclasses.field(default_factory=list)
  top_logits: list[tuple[str, float]] = dataclasses.field(default_factory=list)
  bottom_logits: list[tuple[str, float]] = dataclasses.field(default_factory=list)
  explanation: str = ""


def make_card(
  latent: int,
  sparse: SparseCodes,
  windows_WxT: np.ndarray,
  rows_table: np.ndarray,
  latent_codes_fn: LatentCodesFn,
  tokenizer: Tokenizer,
  *,
  n_top: int = 20,
  n_bins: int = 5,
  per_bin: int = 4,
  before: int = 24,
  after: int = 4,
  logits: LogitWeights | None = None,
  scores: dict[str, float] | None = None,
  explanation: str = "",
  seed: int = 0,
) -> LatentCard:
  """A card from codes over the rows of `rows_table`: top and quantile contexts (one call of
  `latent_codes_fn`), density, and the latent's logit weights if given."""
  top_rows, _ = sparse.top(latent, n_top)
  bins = sparse.quantile_samples(latent, n_bins, per_bin, seed)
  rows = np.concatenate([top_rows] + [r for r, _ in bins]).astype(np.int64)
  found = contexts(windows_WxT, rows_table, rows, latent_codes_fn, before, after)
  top, rest = found[: len(top_rows)], found[len(top_rows) :]
  quantiles = []
  for r, _ in bins:
    quantiles.append(rest[: len(r)])
    rest = rest[len(r) :]
  top_logits, bottom_logits = [], []
  if logits is not None:
    top_logits = [
      (token_text(tokenizer, int(t)), float(v))
      for t, v in zip(logits.top_ids[latent], logits.top_values[latent], strict=True)
    ]
    bottom_logits = [
      (token_text(tokenizer, int(t)), float(v))
      for t, v in zip(logits.bottom_ids[latent], logits.bottom_values[latent], strict=True)
    ]
  return LatentCard(
    latent=latent,
    density=float(sparse.density()[latent]),
    scores=dict(scores or {}),
    top_contexts=top,
    quantile_contexts=quantiles,
    top_logits=top_logits,
    bottom_logits=bottom_logits,
    explanation=explanation,
  )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: left; }
th { cursor: pointer; background: #eee; } tr:nth-child(even) td { background: #fafafa; }
.bar { display: inline-block; height: 8px; background: #e8731a; margin-right: 6px; }
.ctx { font-family: ui-monospace, monospace; white-space: pre; margin: 2px 0; line-height: 1.6; }
.ctx .v { display: inline-block; width: 5em; color: #666; }
.t { border-radius: 2px; } .f { outline: 1.5px solid #000; }
.logits { display: inline-block; vertical-align: top; margin-right: 2em; }
.mono { font-family: ui-monospace, monospace; white-space: pre; }
"""

_SORT_JS = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const col = [...th.parentNode.children].indexOf(th), up = th.dataset.up === '1';
  th.dataset.up = up ? '0' : '1';
  const val = r => { const v = parseFloat(r.cells[col].dataset.v); return isNaN(v) ? -1e30 : v; };
  [...body.rows].sort((a, b) => (up ? 1 : -1) * (val(a) - val(b))).forEach(r => body.appendChild(r));
}
"""


def _esc(text) -> str:
  return html.escape(str(text), quote=True)


def _page(title: str, body: str, script: str = "") -> str:
  script = f"<script>{script}</script>" if script else ""
  return (
    f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_esc(title)}</title>'
    f"<style>{_CSS}</style>{script}</head><body>\n{body}\n</body></html>\n"
  )


def _sort_value(card: LatentCard, key: str) -> float:
  value = card.density if key == "density" else card.scores.get(key, float("nan"))
  return float(value) if value is not None else float("nan")


def _fmt(value: float) -> str:
  return "–" if value is None or math.isnan(value) else f"{value:.3g}"


def _latent_href(latent: int) -> str:
  return f"latents/latent_{latent}.html"


def _index_name(key: str, first: bool) -> str:
  return "index.html" if first else f"index_{key}.html"


def _context_html(ctx: Context, tokenizer: Tokenizer, peak: float) -> str:
  spans = []
  for i, (token, act) in enumerate(zip(ctx.tokens, ctx.activations, strict=True)):
    alpha = min(max(act / peak, 0.0), 1.0) if peak > 0 else 0.0
    tip = f"{tokenizer.token_str(token)!r} · {act:.4g}"
    cls = "t f" if i == ctx.focus else "t"
    spans.append(
      f'<span class="{cls}" style="background: rgba(232, 115, 26, {alpha:.3f})" '
      f'title="{_esc(tip)}">{_esc(token_text(tokenizer, token))}</span>'
    )
  return f'<div class="ctx"><span class="v">{_fmt(ctx.value)}</span>{"".join(spans)}</div>'


def _logits_html(caption: str, rows: Sequence[tuple[str, float]]) -> str:
  cells = "".join(
    f'<tr><td class="mono">{_esc(token)}</td><td>{value:+.3f}</td></tr>' for token, value in rows
  )
  return f'<table class="logits"><caption>{_esc(caption)}</caption>{cells}</table>'


def card_html(card: LatentCard, tokenizer: Tokenizer, title: str) -> str:
  """One latent's page (HTML): density, logit weights, top and quantile contexts."""
  every = card.top_contexts + [c for group in card.quantile_contexts for c in group]
  peak = max([max(c.activations, default=0.0) for c in every], default=0.0)
  scores = "".join(f"<tr><td>{_esc(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in card.scores.items())
  parts = [
    f'<p><a href="../index.html">← {_esc(title)}</a></p>',
    f"<h1>Latent {card.latent}</h1>",
    f"<table><tr><td>density</td><td>{card.density:.3g}</td></tr>"
    f"<tr><td>max activation shown</td><td>{peak:.4g}</td></tr>{scores}</table>",
  ]
  if card.explanation:
    parts.append(f'<h2>N2G explanation</h2><p class="mono">{_esc(card.explanation)}</p>')
  if card.top_logits or card.bottom_logits:
    parts.append(
      "<h2>Logit weights</h2>"
      + _logits_html("top", card.top_logits)
      + _logits_html("bottom", card.bottom_logits)
    )
  parts.append("<h2>Top activations</h2>")
  parts += [_context_html(c, tokenizer, peak) for c in card.top_contexts]
  n = len(card.quantile_contexts)
  if n:
    parts.append("<h2>Samples across activation quantiles</h2>")
  for b in reversed(range(n)):
    parts.append(f"<h3>Quantiles {b / n:.2f}–{(b + 1) / n:.2f}</h3>")
    group = card.quantile_contexts[b]
    parts += [_context_html(c, tokenizer, peak) for c in group] or ["<p>(none)</p>"]
  return _page(f"{title}: latent {card.latent}", "\n".join(parts))


def _index_html(cards: list[LatentCard], title: str, key: str, sort_keys: Sequence[str]) -> str:
  score_keys = [k for k in sort_keys if k != "density"]
  score_keys += sorted({k for c in cards for k in c.scores} - set(score_keys))
  ordered = sorted(
    cards, key=lambda c: (math.isnan(_sort_value(c, key)), -np.nan_to_num(_sort_value(c, key)))
  )
  nav = " · ".join(
    f"<b>by {_esc(k)}</b>" if k == key else f'<a href="{_index_name(k, i == 0)}">by {_esc(k)}</a>'
    for i, k in enumerate(sort_keys)
  )
  head = "".join(f'<th onclick="sortBy(this)">{_esc(k)}</th>' for k in score_keys)
  rows = []
  for card in ordered:
    d = card.density
    width = 60 * min(max((math.log10(d) + 6) / 6, 0.0), 1.0) if d > 0 else 0.0
    cells = "".join(
      f'<td data-v="{_sort_value(card, k)}">{_fmt(_sort_value(card, k))}</td>' for k in score_keys
    )
    rows.append(
      f'<tr><td data-v="{card.latent}"><a href="{_latent_href(card.latent)}">'
      f"latent {card.latent}</a></td>"
      f'<td data-v="{d}"><span class="bar" style="width: {width:.1f}px"></span>{d:.3g}</td>'
      f'{cells}<td class="mono">{_esc(card.explanation)}</td></tr>'
    )
  body = (
    f"<h1>{_esc(title)}</h1><p>{len(cards)} latents, sorted {nav}. Click a column to sort.</p>"
    f'<table><thead><tr><th onclick="sortBy(this)">latent</th>'
    f'<th onclick="sortBy(this)">density</th>{head}<th>explanation</th></tr></thead>'
    f"<tbody>{''.join(rows)}</tbody></table>"
  )
  return _page(title, body, _SORT_JS)


def write_browser(
  directory: str | pathlib.Path,
  cards: Sequence[LatentCard],
  tokenizer: Tokenizer,
  title: str = "SAE latents",
  sort_keys: Sequence[str] = ("density", "n2g_f1"),
) -> pathlib.Path:
  """Write `index.html` (sorted by the first of `sort_keys`), `index_<key>.html` for the others
  and `latents/latent_<i>.html` per card under `directory`; returns the index path."""
  if not sort_keys:
    raise JaxsaeError('sort_keys is empty; pass at least one, e.g. ("density",)')
  cards = list(cards)
  ids = [c.latent for c in cards]
  if len(set(ids)) != len(ids):
    raise JaxsaeError("two cards have the same latent id; pass one card per latent")
  directory = pathlib.Path(directory)
  (directory / "latents").mkdir(parents=True, exist_ok=True)
  for card in cards:
    (directory / _latent_href(card.latent)).write_text(
      card_html(card, tokenizer, title), encoding="utf-8"
    )
  for i, key in enumerate(sort_keys):
    (directory / _index_name(key, i == 0)).write_text(
      _index_html(cards, title, key, sort_keys), encoding="utf-8"
    )
  return directory / "index.html"
