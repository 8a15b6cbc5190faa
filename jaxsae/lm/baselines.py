"""Unigram and bigram baselines: what a language model must beat to have learned anything.

Counts come from the train split. The unigram model is add-one smoothed; the bigram model is
interpolated with it, p(w|u) = lam * c(u,w)/c(u) + (1 - lam) * p_uni(w), with lam chosen on the
validation split, so the bigram baseline is as strong as this family allows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsae.lm.loss import bits_per_byte

_LAMBDAS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
_DENSE_LIMIT = 2**26  # Bigram tables up to this many cells are dense arrays.


@dataclasses.dataclass(frozen=True)
class BaselineResult:
  loss: float  # nats per token
  bits_per_byte: float


class NGramBaselines:
  """Unigram and interpolated bigram models fitted on a token stream."""

  def __init__(self, train_stream: np.ndarray, vocab_size: int):
    stream = np.asarray(train_stream, np.int64)
    self.vocab_size = V = vocab_size
    counts = np.bincount(stream, minlength=V).astype(np.float64)
    self.unigram_probs = (counts + 1.0) / (counts.sum() + V)
    codes = stream[:-1] * V + stream[1:]
    self._context_counts = np.bincount(stream[:-1], minlength=V).astype(np.float64)
    if V * V <= _DENSE_LIMIT:
      self._dense = np.bincount(codes, minlength=V * V).astype(np.float64)
    else:
      self._dense = None
      self._codes, self._code_counts = np.unique(codes, return_counts=True)
    self.bigram_lambda = 0.9

  def _pair_counts(self, codes: np.ndarray) -> np.ndarray:
    if self._dense is not None:
      return self._dense[codes]
    pos = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
    return np.where(self._codes[pos] == codes, self._code_counts[pos], 0).astype(np.float64)

  def _bigram_nats(self, stream: np.ndarray, lam: float) -> np.ndarray:
    prev, nxt = stream[:-1], stream[1:]
    c_u = self._context_counts[prev]
    cond = self._pair_counts(prev * self.vocab_size + nxt) / np.maximum(c_u, 1.0)
    p = np.where(c_u > 0, lam * cond + (1 - lam) * self.unigram_probs[nxt], self.unigram_probs[nxt])
    return -np.log(p)

  def fit_lambda(self, validation_stream: np.ndarray) -> float:
    """Choose the interpolation weight that minimises validation loss."""
    stream = np.asarray(validation_stream, np.int64)
    losses = [self._bigram_nats(stream, lam).mean() for lam in _LAMBDAS]
    self.bigram_lambda = _LAMBDAS[int(np.argmin(losses))]
    return self.bigram_lambda

  def evaluate(self, stream: np.ndarray, byte_lengths: np.ndarray) -> dict[str, BaselineResult]:
    """Loss of both baselines predicting stream[1:] from stream[:-1]."""
    stream = np.asarray(stream, np.int64)
    n_bytes = float(np.asarray(byte_lengths)[stream[1:]].sum())
    uni = -np.log(self.unigram_probs[stream[1:]])
    bi = self._bigram_nats(stream, self.bigram_lambda)
    return {
      name: BaselineResult(float(nats.mean()), bits_per_byte(float(nats.sum()), n_bytes))
      for name, nats in (("unigram", uni), ("bigram", bi))
    }
