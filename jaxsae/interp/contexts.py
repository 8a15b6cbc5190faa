"""An SAE's codes over a set of rows, kept sparse, and the token contexts around activations.

    codes z (N×M), ~10–100 nonzeros a row  ->  COO entries (row, latent, value), sorted by
    latent, then by value descending, so a latent's entries are one contiguous run:
        entries(i) = (rows, values)[starts[i] : starts[i+1]]
    density(i) = #{rows : z_ri > t} / N                      (t = 0 by default)
    quantile bin b of n: the latent's positive values sorted ascending, the i-th of K at
    quantile (i + ½)/K; bin b holds quantiles [b/n, (b+1)/n) (TopK paper / Anthropic-style
    samples from across the activation distribution, not only the top)

Row ids are indices into the rows table the codes were computed for: pair a SparseCodes with
that table (`store.rows_table(start, stop)` for codes of store rows [start, stop)). A context of
row r is the window's tokens around (window_r, position_r) and the latent's activation at each
of them; positions the store does not hold (skipped separators) read as activation 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from jaxsae.errors import JaxsaeError

if TYPE_CHECKING:
  from jaxsae.activations.store import ActivationStore
  from jaxsae.text.tokenizer import Tokenizer

# (window ids, positions) -> a latent's activation at each (window, position).
LatentCodesFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(eq=False)
class SparseCodes:
  """Nonzero entries of codes over `n_rows` rows, sorted by (latent, value descending)."""

  rows: np.ndarray  # (K,) int64
  latents: np.ndarray  # (K,) int32
  values: np.ndarray  # (K,) float32
  n_rows: int
  n_latents: int
  starts: np.ndarray = dataclasses.field(init=False, repr=False)  # (M+1,) run of each latent

  def __post_init__(self):
    self.rows = np.asarray(self.rows, np.int64)
    self.latents = np.asarray(self.latents, np.int32)
    self.values = np.asarray(self.values, np.float32)
    if len(self.latents) and not 0 <= self.latents.min() <= self.latents.max() < self.n_latents:
      raise JaxsaeError(
        f"codes name latents outside [0, {self.n_latents}); pass the SAE's number of latents"
      )
    order = np.lexsort((-self.values, self.latents))
    if np.any(order != np.arange(len(order))):
      self.rows, self.latents, self.values = (
        self.rows[order],
        self.latents[order],
        self.values[order],
      )
    self.starts = np.searchsorted(self.latents, np.arange(self.n_latents + 1)).astype(np.int64)

  @classmethod
  def from_batches(cls, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> SparseCodes:
    """From `(row_ids_B, codes_BxM)` batches (numpy or jax); only the nonzeros are kept."""
    rows, latents, values = [], [], []
    n_rows, n_latents = 0, None
    for row_ids_B, codes_BxM in batches:
      codes_BxM = np.asarray(codes_BxM)
      row_ids_B = np.asarray(row_ids_B, np.int64).reshape(-1)
      if codes_BxM.ndim != 2 or len(codes_BxM) != len(row_ids_B):
        raise JaxsaeError(
          f"a batch has codes of shape {codes_BxM.shape} for {len(row_ids_B)} row ids; "
          "yield (row_ids_B, codes_BxM) with one code row per row id"
        )
      if n_latents is None:
        n_latents = codes_BxM.shape[1]
      elif codes_BxM.shape[1] != n_latents:
        raise JaxsaeError(
          f"batches have codes of {n_latents} and {codes_BxM.shape[1]} latents; "
          "encode every batch with the same SAE"
        )
      b, m = np.nonzero(codes_BxM)
      rows.append(row_ids_B[b])
      latents.append(m.astype(np.int32))
      values.append(codes_BxM[b, m].astype(np.float32))
      n_rows += len(row_ids_B)
    if n_latents is None:
      raise JaxsaeError("no batches of codes were given; pass at least one (row_ids, codes)")
    return cls(
      np.concatenate(rows), np.concatenate(latents), np.concatenate(values), n_rows, n_latents
    )

  def entries(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values) of every nonzero of `latent`, largest value first."""
    if not 0 <= latent < self.n_latents:
      raise JaxsaeError(f"latent {latent} is outside [0, {self.n_latents})")
    lo, hi = self.starts[latent], self.starts[latent + 1]
    return self.rows[lo:hi], self.values[lo:hi]

  def fire_counts(self, threshold: float = 0.0) -> np.ndarray:
    """(M,) rows on which each latent's value exceeds `threshold`."""
    fired = self.values > threshold
    return np.bincount(self.latents[fired], minlength=self.n_latents).astype(np.int64)

  def density(self, threshold: float = 0.0) -> np.ndarray:
    """(M,) share of rows on which each latent fires."""
    return self.fire_counts(threshold) / max(self.n_rows, 1)

  def top(self, latent: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values) of the `n` largest activations of `latent`."""
    rows, values = self.entries(latent)
    return rows[:n], values[:n]

  def quantile_samples(
    self, latent: int, n_bins: int = 10, per_bin: int = 5, seed: int = 0
  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_bins` (rows, values), lowest quantile bin first: up to `per_bin` rows drawn without
    replacement from each quantile bin of the latent's positive values, largest first."""
    rows, values = self.entries(latent)
    positive = values > 0
    rows, values = rows[positive][::-1], values[positive][::-1]  # ascending
    rng = np.random.default_rng([seed, latent])
    out = []
    # The i-th smallest of n values sits at quantile (i + ½)/n: bin ⌊(i + ½)·n_bins/n⌋.
    bin_of = ((np.arange(len(rows)) + 0.5) * n_bins / max(len(rows), 1)).astype(np.int64)
    for part in np.split(np.arange(len(rows)), np.searchsorted(bin_of, np.arange(1, n_bins))):
      pick = np.sort(rng.choice(part, size=min(per_bin, len(part)), replace=False))[::-1]
      out.append((rows[pick], values[pick]))
    return out

  def codes_of(self, rows) -> np.ndarray:
    """Dense (len(rows), M) float32 codes of a few rows (one pass over all entries)."""
    rows = np.asarray(rows, np.int64).reshape(-1)
    unique, inverse = np.unique(rows, return_inverse=True)
    hit = np.isin(self.rows, unique)
    dense = np.zeros((len(unique), self.n_latents), np.float32)
    dense[np.searchsorted(unique, self.rows[hit]), self.latents[hit]] = self.values[hit]
    return dense[inverse.reshape(-1)]


def sparse_codes_of_store(
  store: ActivationStore,
  hook: str,
  encode,
  start: int = 0,
  stop: int | None = None,
  batch_size: int = 4096,
) -> SparseCodes:
  """Codes of store rows [start, stop) by `encode(x_BxD) -> codes_BxM`, with row ids relative
  to `start` (pair them with `store.rows_table(start, stop)`). `encode` sees the rows as stored:
  apply any input scale the SAE was trained with inside it."""
  stop = store.n_rows if stop is None else min(stop, store.n_rows)
  if not 0 <= start < stop:
    raise JaxsaeError(f"row range [{start}, {stop}) of a store of {store.n_rows} rows is empty")

  def batches():
    for lo in range(start, stop, batch_size):
      hi = min(lo + batch_size, stop)
      yield np.arange(lo - start, hi - start), encode(store.read_rows(hook, lo, hi))

  return SparseCodes.from_batches(batches())


@dataclasses.dataclass
class Context:
  """Tokens around one activation and a latent's activation at each of them."""

  tokens: list[int]
  activations: list[float]
  focus: int  # index in `tokens` of the activating token
  window: int
  position: int  # of the focus token in its window

  @property
  def value(self) -> float:
    """The activation at the focus token."""
    return self.activations[self.focus]


def contexts(
  windows_WxT: np.ndarray,
  rows_table: np.ndarray,
  row_ids,
  latent_codes_fn: LatentCodesFn,
  before: int = 24,
  after: int = 4,
) -> list[Context]:
  """The context of each row in `row_ids`: up to `before` tokens before it and `after` after it
  in its window, with activations from one call of `latent_codes_fn(window_ids, positions)`."""
  windows_WxT = np.asarray(windows_WxT)
  rows_table = np.asarray(rows_table)
  row_ids = np.asarray(row_ids, np.int64).reshape(-1)
  if len(row_ids) and (row_ids.min() < 0 or row_ids.max() >= len(rows_table)):
    raise JaxsaeError(
      f"row ids reach {int(row_ids.max())} but the rows table has {len(rows_table)} rows; "
      "pass the rows table the codes were computed for"
    )
  T = windows_WxT.shape[1]
  spans = []
  for r in row_ids:
    w, p = int(rows_table[r, 0]), int(rows_table[r, 1])
    spans.append((w, p, max(0, p - before), min(T, p + after + 1)))
  if not spans:
    return []
  window_ids = np.concatenate([np.full(hi - lo, w) for w, _, lo, hi in spans])
  positions = np.concatenate([np.arange(lo, hi) for _, _, lo, hi in spans])
  acts = np.asarray(latent_codes_fn(window_ids, positions), np.float32).reshape(-1)
  if len(acts) != len(positions):
    raise JaxsaeError(
      f"latent_codes_fn returned {len(acts)} activations for {len(positions)} positions; "
      "return one activation per (window, position)"
    )
  out, at = [], 0
  for w, p, lo, hi in spans:
    out.append(
      Context(
        tokens=[int(t) for t in windows_WxT[w, lo:hi]],
        activations=[float(a) for a in acts[at : at + hi - lo]],
        focus=p - lo,
        window=w,
        position=p,
      )
    )
    at += hi - lo
  return out


def store_codes_fn(store: ActivationStore, hook: str, encode, batch_size: int = 4096):
  """`(window_ids, positions) -> codes_NxM` read from `store` and encoded by `encode`; rows the
  store does not hold (skipped separators) get all-zero codes."""
  table = store.rows_table()
  seq_len = int(store.windows().shape[1])
  keys = table[:, 0].astype(np.int64) * seq_len + table[:, 1]
  order = np.argsort(keys, kind="stable")
  sorted_keys = keys[order]

  def fn(window_ids, positions) -> np.ndarray:
    want = np.asarray(window_ids, np.int64) * seq_len + np.asarray(positions, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
    found = sorted_keys[at] == want
    rows = np.where(found, order[at], -1)
    unique, inverse = np.unique(rows[found], return_inverse=True)
    codes = []
    for lo in range(0, len(unique), batch_size):
      codes.append(encode_padded(encode, store.gather(hook, unique[lo : lo + batch_size])))
    if not codes:  # no position is in the store: encode one row for the width
      codes.append(encode_padded(encode, store.gather(hook, [0]))[:0])
    codes = np.concatenate(codes)
    out = np.zeros((len(want), codes.shape[1]), np.float32)
    out[found] = codes[inverse.reshape(-1)]
    return out

  return fn


def encode_padded(encode, x_BxD: np.ndarray) -> np.ndarray:
  """encode(x) on x padded with zero rows to a power of two (≥ 64), so a jitted `encode` sees a
  few batch shapes, not one per call."""
  n = len(x_BxD)
  size = 1 << max(6, (n - 1).bit_length())
  padded = np.concatenate([x_BxD, np.zeros((size - n, x_BxD.shape[1]), x_BxD.dtype)])
  return np.asarray(encode(padded), np.float32)[:n]


def store_context_fn(store: ActivationStore, hook: str, encode, latent: int) -> LatentCodesFn:
  """A `latent_codes_fn` for `contexts`: `latent`'s activation at (window, position) pairs."""
  codes = store_codes_fn(store, hook, encode)
  return lambda window_ids, positions: codes(window_ids, positions)[:, latent]


VISIBLE = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "↵"}


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
  """A token for display: `tokenizer.token_str`, with spaces, tabs and newlines made visible."""
  try:
    decoded = tokenizer.decode([token_id])
  except JaxsaeError:
    decoded = ""
  text = decoded if decoded and decoded.isspace() else tokenizer.token_str(int(token_id))
  return "".join(VISIBLE.get(c, c) for c in text)
