"""N2G scores and feature browsers of one SAE on a held-out activation store.

The store's rows are split at a window boundary near the middle: explanations are built on the
first half and scored on the second (`interp.n2g`); the browser shows contexts from the whole
store with each latent's N2G score and its decoder direction's top logits.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxsae.activations.store import ActivationStore
from jaxsae.interp import browser, contexts, n2g


def split_row(store: ActivationStore) -> int:
  """The first row of the first window that starts after the store's middle row."""
  table = store.rows_table()
  middle = len(table) // 2
  later = np.flatnonzero(table[middle:, 0] != table[middle, 0])
  return middle + int(later[0]) if len(later) else middle


def n2g_scores(store: ActivationStore, hook: str, encode, n_latents: int, seed: int):
  """(summary {n2g_precision, n2g_recall, n2g_f1, ...}, scores, sparse codes of the whole store)
  for up to `n_latents` latents (-1: all) drawn among those firing on the explanation half."""
  cut = split_row(store)
  windows, table = store.windows(), store.rows_table()
  expl = contexts.sparse_codes_of_store(store, hook, encode, 0, cut)
  held = contexts.sparse_codes_of_store(store, hook, encode, cut, store.n_rows)
  firing = np.flatnonzero(expl.fire_counts() > 0)
  if 0 <= n_latents < len(firing):
    firing = np.sort(np.random.default_rng(seed).choice(firing, n_latents, replace=False))
  scores = n2g.explain_and_score_all(
    expl,
    n2g.suffix_tokens(windows, table[:cut]),
    held,
    n2g.suffix_tokens(windows, table[cut:]),
    latents=firing,
  )
  summary = {f"n2g_{k}": v for k, v in n2g.summarize(scores).items()}
  return summary, scores


def write_feature_browser(
  directory: pathlib.Path,
  title: str,
  lm,
  store: ActivationStore,
  hook: str,
  encode,
  decoder_rows_MxD: np.ndarray,
  scores: list,
  n_cards: int,
  seed: int,
) -> pathlib.Path:
  """Pages for up to `n_cards` N2G-scored latents (random, seeded), sorted by density or F1."""
  sparse = contexts.sparse_codes_of_store(store, hook, encode)
  windows, table = store.windows(), store.rows_table()
  scored = [s for s in scores if s.support > 0]
  rng = np.random.default_rng(seed)
  chosen = [scored[i] for i in np.sort(rng.permutation(len(scored))[:n_cards])]
  logits = browser.decoder_logits(decoder_rows_MxD, browser.unembedding(lm), k=10)
  codes_fn = contexts.store_codes_fn(store, hook, encode)
  cards = []
  for s in chosen:
    latent = int(s.latent)
    cards.append(
      browser.make_card(
        latent,
        sparse,
        windows,
        table,
        lambda w, p, latent=latent: codes_fn(w, p)[:, latent],
        lm.tokenizer,
        logits=logits,
        scores={"n2g_f1": s.f1, "n2g_precision": s.precision, "n2g_recall": s.recall},
        explanation=s.explanation.describe(lm.tokenizer) if s.explanation else "",
        seed=seed,
      )
    )
  return browser.write_browser(directory, cards, lm.tokenizer, title=title)
