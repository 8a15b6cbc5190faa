"""Unigram and bigram baselines: proper distributions, and dense and sparse counts agree."""

import numpy as np
import pytest

from jaxsae.lm import baselines as baselines_lib
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline
from jaxsae.text.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def streams():
  corpus = corpus_lib.discover(
    corpus_lib.stdlib_root() / "asyncio", validation_fraction=0.15, test_fraction=0.15
  )
  tok = ByteTokenizer()
  return {s: pipeline.token_stream(corpus.read(s), tok) for s in ("train", "validation", "test")}


def test_distributions_sum_to_one(streams):
  b = baselines_lib.NGramBaselines(streams["train"], 257)
  assert b.unigram_probs.sum() == pytest.approx(1.0)
  context = ord("d")
  nats = b._bigram_nats(np.stack([np.full(257, context), np.arange(257)], 1).reshape(-1), 0.9)
  # Pairs (d, w) for every w sit at even positions of the interleaved stream.
  assert np.exp(-nats[::2]).sum() == pytest.approx(1.0)


def test_bigram_beats_unigram_and_lambda_is_fitted_on_validation(streams):
  b = baselines_lib.NGramBaselines(streams["train"], 257)
  lam = b.fit_lambda(streams["validation"])
  assert lam in baselines_lib._LAMBDAS
  result = b.evaluate(streams["test"], ByteTokenizer().token_byte_lengths())
  assert result["bigram"].loss < result["unigram"].loss - 0.5
  assert 3.5 < result["unigram"].bits_per_byte < 6.0


def test_sparse_counts_match_dense(streams, monkeypatch):
  dense = baselines_lib.NGramBaselines(streams["train"], 257)
  monkeypatch.setattr(baselines_lib, "_DENSE_LIMIT", 0)
  sparse = baselines_lib.NGramBaselines(streams["train"], 257)
  assert sparse._dense is None
  np.testing.assert_allclose(
    sparse._bigram_nats(streams["test"], 0.9), dense._bigram_nats(streams["test"], 0.9)
  )
