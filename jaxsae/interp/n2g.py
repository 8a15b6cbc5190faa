"""N2G-style explanations of latents: token n-grams ending at the activating token, scored on
held-out rows (after Foote et al. 2023, "Neuron to Graph", as used in the TopK paper).

    pattern   (t₋ₙ₊₁, …, t₋₁, t₀), n ≤ 4, t₀ the row's token; an interior t may be a wildcard
              [*] (any token, or none before the window start); the first and last are tokens
    predicted(r) = ∃ pattern matching the tokens that end at row r
    fires(r)     = z_r > θ,  θ = max(fire_threshold, fire_fraction · max z on the explanation
                   split); by default θ = 0, i.e. any activation after the ReLU/TopK
    precision = P(fires | predicted),  recall = P(predicted | fires),  F1 = 2PR / (P + R)

Explaining (data-driven, no model calls): for each of the latent's `n_top` largest activations
on the explanation split, take the 8 suffix patterns at that position (n = 1..4, interior
wildcards) and keep the shortest one (fewest concrete tokens, then fewest tokens; ties: higher
precision) whose precision over *all* explanation-split positions is ≥ `min_precision` and that
matches ≥ `min_count` firing positions. Then cover the firing positions greedily with those
patterns, at most `max_patterns` of them.

Every position's suffix under each of the 8 shapes is one int64 key (tokens renumbered densely,
key = Σ cᵢ·Uⁱ over the concrete tokens), sorted once per split; a pattern's matches are a
`searchsorted` range, so each latent costs O(fires · log N), not O(N · patterns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.interp.contexts import SparseCodes, token_text
from jaxsae.text.tokenizer import Tokenizer

# A pattern in reading order; None is a wildcard, -1 "before the window start".
Pattern = tuple[int | None, ...]

# Pattern shapes (True = concrete token), shortest first: n = 1..4 with interior wildcards.
SHAPES: tuple[tuple[bool, ...], ...] = (
  (True,),
  (True, True),
  (True, False, True),
  (True, False, False, True),
  (True, True, True),
  (True, False, True, True),
  (True, True, False, True),
  (True, True, True, True),
)


def suffix_tokens(windows_WxT: np.ndarray, rows_table: np.ndarray, n: int = 4) -> np.ndarray:
  """(N, n) int64: the n tokens ending at each row, in reading order (last column = the row's
  token), -1 before the window start."""
  windows_WxT = np.asarray(windows_WxT)
  rows_table = np.asarray(rows_table)
  w, p = rows_table[:, 0].astype(np.int64), rows_table[:, 1].astype(np.int64)
  pos_Nxn = p[:, None] + np.arange(-n + 1, 1)
  tokens = windows_WxT[w[:, None], np.maximum(pos_Nxn, 0)].astype(np.int64)
  return np.where(pos_Nxn >= 0, tokens, -1)


def _shape_of(pattern: Pattern) -> tuple[bool, ...]:
  return tuple(t is not None for t in pattern)


class SuffixIndex:
  """Every position's key under each pattern shape, sorted, for counting and matching."""

  def __init__(self, suffixes_Nxn: np.ndarray):
    suffixes_Nxn = np.asarray(suffixes_Nxn, np.int64)
    if suffixes_Nxn.ndim != 2 or suffixes_Nxn.shape[1] < 1:
      raise JaxsaeError(
        f"suffixes have shape {suffixes_Nxn.shape}; pass suffix_tokens(windows, rows_table, n)"
      )
    self.n_rows, self.n = suffixes_Nxn.shape
    self.suffixes = suffixes_Nxn
    self.vocab, compact = np.unique(suffixes_Nxn, return_inverse=True)
    compact = compact.reshape(suffixes_Nxn.shape).astype(np.int64)
    self.base = max(len(self.vocab), 2)
    self.shapes = [s for s in SHAPES if len(s) <= self.n]
    if float(self.base) ** max(sum(s) for s in self.shapes) >= 2.0**63:
      raise JaxsaeError(
        f"{len(self.vocab)} distinct tokens are too many for int64 keys of {self.n}-grams; "
        "use suffixes of fewer tokens (n=3) or fewer rows"
      )
    self.keys, self.order, self.sorted_keys = {}, {}, {}
    for shape in self.shapes:
      keys = self._keys(compact[:, self.n - len(shape) :], shape)
      order = np.argsort(keys, kind="stable")
      self.keys[shape], self.order[shape], self.sorted_keys[shape] = keys, order, keys[order]

  def _keys(self, compact_NxL: np.ndarray, shape: tuple[bool, ...]) -> np.ndarray:
    key = np.zeros(len(compact_NxL), np.int64)
    for j, concrete in enumerate(shape):
      if concrete:
        key = key * self.base + compact_NxL[:, j]
    return key

  def pattern_key(self, pattern: Pattern) -> int:
    """The key of `pattern` under its shape; -1 if one of its tokens never occurs here."""
    shape = _shape_of(pattern)
    if len(pattern) > self.n or shape not in self.keys:
      raise JaxsaeError(
        f"pattern {pattern} does not fit suffixes of {self.n} tokens; build the suffixes with "
        f"n >= {len(pattern)} (first and last pattern tokens must not be wildcards)"
      )
    tokens = np.asarray([t for t in pattern if t is not None], np.int64)
    at = np.minimum(np.searchsorted(self.vocab, tokens), len(self.vocab) - 1)
    if np.any(self.vocab[at] != tokens):
      return -1
    return int(self._keys(at[None], (True,) * len(at))[0])

  def count(self, shape: tuple[bool, ...], keys) -> np.ndarray:
    """How many positions have each of `keys` under `shape`."""
    sorted_keys = self.sorted_keys[shape]
    return np.searchsorted(sorted_keys, keys, "right") - np.searchsorted(sorted_keys, keys)

  def match(self, patterns: Sequence[Pattern]) -> np.ndarray:
    """(N,) bool: positions where any pattern matches."""
    hit = np.zeros(self.n_rows, bool)
    for pattern in patterns:
      shape, key = _shape_of(pattern), self.pattern_key(pattern)
      lo, hi = np.searchsorted(self.sorted_keys[shape], [key, key + 1])
      hit[self.order[shape][lo:hi]] = True
    return hit


def _index(suffixes) -> SuffixIndex:
  return suffixes if isinstance(suffixes, SuffixIndex) else SuffixIndex(suffixes)


def _check_rows(sparse: SparseCodes, index: SuffixIndex, split: str) -> None:
  if sparse.n_rows != index.n_rows:
    raise JaxsaeError(
      f"the {split} codes cover {sparse.n_rows} rows but its suffixes {index.n_rows}; build "
      "both from the same rows table (row ids index that table)"
    )


@dataclasses.dataclass(frozen=True)
class Explanation:
  """A latent's patterns, its fire threshold θ, and their precision/recall on the explanation
  split (`support`: firing positions there)."""

  latent: int
  patterns: list[Pattern]
  threshold: float
  precision: float
  recall: float
  support: int

  def describe(self, tokenizer: Tokenizer) -> str:
    """E.g. `'d' 'e' 'f' [*] '('  |  '⏎'`; "(no pattern)" for an empty explanation."""
    if not self.patterns:
      return "(no pattern)"
    parts = []
    for pattern in self.patterns:
      words = [
        "[*]" if t is None else "[start]" if t < 0 else f"'{token_text(tokenizer, t)}'"
        for t in pattern
      ]
      parts.append(" ".join(words))
    return "  |  ".join(parts)


@dataclasses.dataclass(frozen=True)
class N2GScore:
  """Held-out precision, recall and F1 of an explanation; `support`: firing positions,
  `predicted`: predicted positions. Precision is 0 when nothing is predicted; recall and F1 are
  NaN when the latent never fires on the held-out split."""

  precision: float
  recall: float
  f1: float
  support: int
  predicted: int = 0
  latent: int = -1
  explanation: Explanation | None = None


def explain(
  latent: int,
  sparse_codes_expl: SparseCodes,
  suffixes_expl,
  *,
  n_top: int = 20,
  min_precision: float = 0.7,
  min_count: int = 2,
  max_patterns: int = 8,
  fire_threshold: float = 0.0,
  fire_fraction: float = 0.0,
) -> Explanation:
  """Patterns for `latent` from its top activations on the explanation split (`suffixes_expl`:
  `suffix_tokens(...)` of the same rows, or a `SuffixIndex` of them, reused across latents)."""
  index = _index(suffixes_expl)
  _check_rows(sparse_codes_expl, index, "explanation")
  rows, values = sparse_codes_expl.entries(latent)
  peak = float(values[0]) if len(values) else 0.0
  threshold = max(fire_threshold, fire_fraction * peak)
  fire_rows = rows[values > threshold]
  if not len(fire_rows):
    return Explanation(latent, [], threshold, 0.0, 0.0, 0)
  top = fire_rows[:n_top]
  fire_keys_SxF = np.stack([index.keys[s][fire_rows] for s in index.shapes])
  top_keys_SxK = np.stack([index.keys[s][top] for s in index.shapes])
  precision_SxK = np.empty(top_keys_SxK.shape)
  fires_SxK = np.empty(top_keys_SxK.shape, np.int64)
  for i, shape in enumerate(index.shapes):
    sorted_fire = np.sort(fire_keys_SxF[i])
    fires_SxK[i] = np.searchsorted(sorted_fire, top_keys_SxK[i], "right") - np.searchsorted(
      sorted_fire, top_keys_SxK[i]
    )
    precision_SxK[i] = fires_SxK[i] / index.count(shape, top_keys_SxK[i])
  # Shortest first: fewest concrete tokens, then fewest tokens, then the highest precision.
  size_S = np.asarray([sum(s) * 8 + len(s) for s in index.shapes], np.float64)
  ok_SxK = (precision_SxK >= min_precision) & (fires_SxK >= min_count)
  rank_SxK = np.where(ok_SxK, size_S[:, None] - precision_SxK / 2, np.inf)
  best_K = np.argmin(rank_SxK, axis=0)
  chosen = {
    (int(s), int(top_keys_SxK[s, k])): (precision_SxK[s, k], int(top[k]))
    for k, s in enumerate(best_K)
    if ok_SxK[s, k]
  }
  patterns: list[Pattern] = []
  if chosen:
    cands = sorted(chosen.items(), key=lambda item: -item[1][0])
    cover_CxF = np.stack([fire_keys_SxF[s] == key for (s, key), _ in cands])
    covered = np.zeros(len(fire_rows), bool)
    while len(patterns) < max_patterns:
      gain = (cover_CxF & ~covered).sum(1)
      c = int(np.argmax(gain))
      if gain[c] == 0:
        break
      covered |= cover_CxF[c]
      (s, _), (_, row) = cands[c]
      shape = index.shapes[s]
      tokens = index.suffixes[row, index.n - len(shape) :]
      patterns.append(tuple(int(t) if m else None for t, m in zip(tokens, shape, strict=True)))
  precision, recall, _ = _metrics(index.match(patterns), fire_rows)
  return Explanation(latent, patterns, threshold, precision, recall, len(fire_rows))


def _metrics(predicted_N: np.ndarray, fire_rows: np.ndarray) -> tuple[float, float, int]:
  """(precision, recall, predicted count); precision 0 with no predictions, recall NaN with no
  fires."""
  n_pred = int(predicted_N.sum())
  hits = int(predicted_N[fire_rows].sum())
  precision = hits / n_pred if n_pred else 0.0
  recall = hits / len(fire_rows) if len(fire_rows) else float("nan")
  return precision, recall, n_pred


def score(
  explanation: Explanation, latent: int, sparse_codes_heldout: SparseCodes, suffixes_heldout
) -> N2GScore:
  """Precision, recall and F1 of `explanation` predicting where `latent` fires (> the
  explanation's threshold) on the held-out split."""
  index = _index(suffixes_heldout)
  _check_rows(sparse_codes_heldout, index, "held-out")
  rows, values = sparse_codes_heldout.entries(latent)
  fire_rows = rows[values > explanation.threshold]
  precision, recall, n_pred = _metrics(index.match(explanation.patterns), fire_rows)
  if not len(fire_rows):
    f1 = float("nan")
  else:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return N2GScore(precision, recall, f1, len(fire_rows), n_pred, latent, explanation)


def explain_and_score_all(
  sparse_expl: SparseCodes,
  suffix_expl,
  sparse_held: SparseCodes,
  suffix_held,
  latents: Sequence[int] | None = None,
  **explain_kwargs,
) -> list[N2GScore]:
  """Explain each latent (all by default) on one split and score it on the other; each split's
  suffix index is built once. `explain_kwargs` go to `explain`."""
  index_expl, index_held = _index(suffix_expl), _index(suffix_held)
  latents = range(sparse_expl.n_latents) if latents is None else latents
  out = []
  for latent in latents:
    explanation = explain(int(latent), sparse_expl, index_expl, **explain_kwargs)
    out.append(score(explanation, int(latent), sparse_held, index_held))
  return out


def _scored(scores: Sequence[N2GScore]) -> list[N2GScore]:
  """Latents that fire on both splits (the others cannot be explained or scored)."""
  return [
    s for s in scores if s.support > 0 and (s.explanation is None or s.explanation.support > 0)
  ]


def mean_precision(scores: Sequence[N2GScore]) -> float:
  kept = _scored(scores)
  return float(np.mean([s.precision for s in kept])) if kept else float("nan")


def mean_recall(scores: Sequence[N2GScore]) -> float:
  kept = _scored(scores)
  return float(np.mean([s.recall for s in kept])) if kept else float("nan")


def mean_f1(scores: Sequence[N2GScore]) -> float:
  kept = _scored(scores)
  return float(np.mean([s.f1 for s in kept])) if kept else float("nan")


def summarize(scores: Sequence[N2GScore]) -> dict[str, float]:
  """Mean precision, recall and F1 over latents that fire on both splits, and how many."""
  return {
    "precision": mean_precision(scores),
    "recall": mean_recall(scores),
    "f1": mean_f1(scores),
    "n_scored": len(_scored(scores)),
    "n_latents": len(scores),
  }
