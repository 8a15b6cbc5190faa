"""Token windows of the corpus a model was trained on, read from its metadata: what to run a
model over when looking for what its latents, neurons or circuit nodes respond to."""

from __future__ import annotations

import numpy as np

from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline


def corpus_windows(
  lm, n: int = 128, seq_len: int | None = None, split: str = "validation", seed=0
) -> np.ndarray:
  """(n, seq_len) int32 token windows drawn (sorted) from a split of the corpus the model was
  trained on (its metadata; else the standard library), packed as in training."""
  meta = lm.metadata or {}
  seq_len = int(seq_len or min(lm.config.max_len, int(meta.get("seq_len", lm.config.max_len))))
  found = corpus_lib.from_config(meta)
  windows = pipeline.load_split(found, split, lm.tokenizer, seq_len).windows
  return pipeline.sample_windows(windows, n, seed, split)[:, :seq_len]
