"""Packing, shuffling, per-process sharding and exact resume of the grain pipeline."""

import numpy as np
import pytest

from jaxsae.errors import CorpusError, JaxsaeError
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline
from jaxsae.text.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def windows():
  corpus = corpus_lib.discover(
    corpus_lib.stdlib_root() / "email", validation_fraction=0.1, test_fraction=0.1
  )
  return pipeline.load_split(corpus, "train", ByteTokenizer(), seq_len=32).windows


def _take(iterator, n):
  return [next(iterator)["tokens"] for _ in range(n)]


def test_stream_packs_documents_after_separators():
  tok = ByteTokenizer()
  stream = pipeline.token_stream([b"ab", b"c"], tok)
  assert stream.tolist() == [256, 97, 98, 256, 99]
  windows = pipeline.PackedWindows(stream, seq_len=2)
  assert len(windows) == 2
  assert windows[0].tolist() == [256, 97, 98] and windows[1].tolist() == [98, 256, 99]
  assert windows[0].dtype == np.int32


def test_windows_cover_every_target_once(windows):
  targets = np.concatenate([windows[i][1:] for i in range(len(windows))])
  np.testing.assert_array_equal(targets, windows.stream[1 : len(windows) * 32 + 1])


def test_shuffle_is_deterministic_per_seed_and_reshuffles_each_epoch(windows):
  a = _take(pipeline.train_batches(windows, 8, seed=3), 4)
  b = _take(pipeline.train_batches(windows, 8, seed=3), 4)
  c = _take(pipeline.train_batches(windows, 8, seed=4), 4)
  assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
  # One full epoch visits every window exactly once; the next epoch's order differs.
  small = pipeline.PackedWindows(windows.stream[: 16 * 32 + 1], 32)
  it = pipeline.train_batches(small, 4, seed=0)
  epoch1, epoch2 = np.concatenate(_take(it, 4)), np.concatenate(_take(it, 4))
  rows = {tuple(small[i]) for i in range(16)}
  assert {tuple(r) for r in epoch1} == rows == {tuple(r) for r in epoch2}
  assert not np.array_equal(epoch1, epoch2)


def test_iterator_state_resumes_exactly(windows):
  it = pipeline.train_batches(windows, 8, seed=1)
  _take(it, 5)
  state = it.get_state()
  expected = _take(it, 3)
  resumed = pipeline.train_batches(windows, 8, seed=1)
  resumed.set_state(state)
  for x, y in zip(expected, _take(resumed, 3), strict=True):
    np.testing.assert_array_equal(x, y)


def test_processes_split_each_global_batch(windows):
  whole = _take(pipeline.train_batches(windows, 8, seed=2), 3)
  parts = [
    _take(pipeline.train_batches(windows, 8, seed=2, process_index=p, process_count=2), 3)
    for p in range(2)
  ]
  for step in range(3):
    assert parts[0][step].shape == (4, 33)
    union = {tuple(r) for r in np.concatenate([parts[0][step], parts[1][step]])}
    assert union == {tuple(r) for r in whole[step]}
  with pytest.raises(JaxsaeError, match="not divisible by the 3 processes"):
    pipeline.train_batches(windows, 8, seed=0, process_count=3)


def test_eval_batches_pad_the_last_batch(windows):
  batches = list(pipeline.eval_batches(windows, 4, max_sequences=10))
  assert [b["weights"].tolist() for b in batches] == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
  np.testing.assert_array_equal(batches[2]["tokens"][1], windows[9])
  assert not batches[2]["tokens"][2:].any()


def test_bad_lengths_name_the_fix():
  with pytest.raises(JaxsaeError, match="seq_len=1 is below 2"):
    pipeline.PackedWindows(np.arange(10), 1)
  with pytest.raises(CorpusError, match="shorter data.seq_len"):
    pipeline.PackedWindows(np.arange(10), 64)
