"""Harvesting into a tensorstore activation store, resuming it, and reading it back shuffled."""

import hashlib
import re

import numpy as np
import pytest

from jaxsae.activations import harvest as harvest_lib
from jaxsae.activations import int8
from jaxsae.activations.reader import StoreSource
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import JaxsaeError
from jaxsae.evals import store_precision
from jaxsae.models import pretrained
from jaxsae.sae import normalization, row_sources, train_config
from jaxsae.sae import train as sae_train

HOOKS = ("blocks.1.resid_post", "blocks.0.mlp.post")


@pytest.fixture(scope="module")
def lm():
  return pretrained.load("default")


@pytest.fixture(scope="module")
def windows(lm):
  text = "def f(x):\n    return [x, 'a']\n\n" * 20
  ids = np.concatenate([lm.encode(text), lm.encode("import os\nprint(os.sep)\n" * 10)])
  return ids[: 12 * 32].reshape(12, 32)


@pytest.mark.slow
def test_harvested_rows_equal_the_models_captures(lm, windows, tmp_path):
  store = harvest_lib.harvest(lm, windows, HOOKS, tmp_path, batch_size=5, chunk_rows=64)
  assert store.meta["complete"] and store.n_rows == int((windows != 256).sum())
  _, cache = lm.run(windows, capture=HOOKS)
  table = store.rows_table()
  assert np.all(windows[table[:, 0], table[:, 1]] == table[:, 2])
  assert not np.any(table[:, 2] == lm.tokenizer.separator_id)
  for hook in HOOKS:
    expected = np.asarray(cache[hook])[table[:, 0], table[:, 1]]
    np.testing.assert_allclose(store.read_rows(hook, 0, store.n_rows), expected, atol=1e-5)
  np.testing.assert_array_equal(store.windows(), windows)


def test_the_store_records_the_trainers_input_scale(lm, windows, tmp_path):
  """One definition of c (E‖c x‖² = d): on the same rows, the harvest's and the trainer's c are
  the same float."""
  store = harvest_lib.harvest(lm, windows, HOOKS[:1], tmp_path, chunk_rows=64, progress=False)
  x = store.read_rows(HOOKS[0], 0, store.n_rows)  # Fewer than the harvest's 8192: all rows.
  scale = store.meta["scale"][HOOKS[0]]
  assert scale == normalization.estimate_scale(x)
  assert np.mean(np.sum((scale * x.astype(np.float64)) ** 2, -1)) == pytest.approx(x.shape[-1])
  config = train_config.base_config("topk")
  config.data.update(normalization_samples=10 * store.n_rows, b_dec_init="zeros")
  trainers = sae_train.initial_statistics(config, StoreSource(store, HOOKS[0]))
  assert trainers.scale == scale  # Its sample is every row too.
  with pytest.raises(JaxsaeError, match="NaN"):
    normalization.estimate_scale(np.where(x > 0, np.nan, x))
  with pytest.raises(JaxsaeError, match="all zero"):
    normalization.estimate_scale(np.zeros_like(x))


def _chunk_hashes(store):
  return [
    hashlib.sha256(store.read_chunk(h, c).tobytes()).hexdigest()
    for h in store.hooks
    for c in range(store.n_chunks)
  ]


def test_an_interrupted_harvest_resumes_to_the_same_content(lm, windows, tmp_path):
  full = harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "full", batch_size=4, chunk_rows=50)
  cut = harvest_lib.harvest(
    lm, windows, HOOKS, tmp_path / "cut", batch_size=4, chunk_rows=50, stop_after_chunks=3
  )
  assert not cut.meta["complete"] and cut.meta["rows_written"] == 150
  with pytest.raises(JaxsaeError, match="incomplete"):
    StoreSource(tmp_path / "cut", HOOKS[0])
  with pytest.raises(JaxsaeError, match="other settings \\(batch_size\\)"):  # Other kernels.
    harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "cut", batch_size=8, chunk_rows=50)
  resumed = harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "cut", batch_size=4, chunk_rows=50)
  assert resumed.meta["complete"]
  again = harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "cut", batch_size=8, chunk_rows=50)
  assert _chunk_hashes(again) == _chunk_hashes(full)  # A complete store is reused as it is.
  assert _chunk_hashes(resumed) == _chunk_hashes(full)
  with pytest.raises(JaxsaeError, match="other settings"):
    harvest_lib.harvest(lm, windows[:6], HOOKS, tmp_path / "cut", chunk_rows=50)


def test_bfloat16_store_and_bad_hooks(lm, windows, tmp_path):
  store = harvest_lib.harvest(lm, windows, HOOKS[:1], tmp_path, dtype="bfloat16", chunk_rows=64)
  _, cache = lm.run(windows, capture=HOOKS[:1])
  table = store.rows_table()
  expected = np.asarray(cache[HOOKS[0]])[table[:, 0], table[:, 1]]
  np.testing.assert_allclose(
    store.read_rows(HOOKS[0], 0, store.n_rows), expected, rtol=1e-2, atol=1e-2
  )
  with pytest.raises(JaxsaeError, match="unknown hook"):
    harvest_lib.harvest(lm, windows, ["blocks.9.resid_post"], tmp_path / "x")
  with pytest.raises(JaxsaeError, match="per-head"):
    harvest_lib.harvest(lm, windows, ["blocks.0.attn.q"], tmp_path / "y")


def _int8_tolerance(store, hook, rows):
  """Δ/2 of each of `rows`' elements (its chunk's scale of its channel), plus float32 rounding."""
  delta = np.asarray(store.scales_array(hook).read().result())[np.asarray(rows) // store.chunk_rows]
  return delta / 2 * (1 + 1e-6)


def test_int8_store_round_trips_within_half_a_step_per_chunk_and_channel(tmp_path):
  rng = np.random.default_rng(0)
  n, d, chunk = 300, 12, 64
  x = rng.standard_normal((n, d)).astype(np.float32)
  x[:, 3] *= 80.0  # An outlier channel: its scale must not coarsen the others.
  x[::17, 7] = 500.0  # Rare outliers in one channel.
  x[:, 5] = 0.0  # All zero: decodes to exactly 0.
  x[:chunk, 9] = 0.0  # Zero in the first chunk only.
  store = ActivationStore.create(
    tmp_path, hooks={"h": d}, n_rows=n, rows_table=np.zeros((n, 3), np.int32),
    windows=np.zeros((1, 4), np.int32), dtype="int8", chunk_rows=chunk,
  )  # fmt: skip
  assert store.meta["dtype"] == "int8" and store.meta["scales"] == "per_chunk_channel"
  for c in range(store.n_chunks):  # The last chunk is short (300 = 4·64 + 44).
    store.write_chunk_async("h", c, x[c * chunk : (c + 1) * chunk]).result()
  store = ActivationStore.open(tmp_path)
  assert store.array("h").dtype.numpy_dtype == np.int8
  scales = np.asarray(store.scales_array("h").read().result())
  assert scales.shape == (5, d)
  peaks = [np.abs(x[c * chunk : (c + 1) * chunk, 3]).max() for c in range(5)]
  np.testing.assert_allclose(scales[:, 3], np.array(peaks) / 127, rtol=1e-6)
  everything = np.arange(n)
  for got, rows in (
    (store.read_rows("h", 0, n), everything),
    (store.read_rows("h", 50, 200), everything[50:200]),  # Crosses three chunk boundaries.
    (np.concatenate([store.read_chunk("h", c) for c in range(5)]), everything),
    (store.gather("h", [299, 3, 130, 64, 63, 3]), np.array([299, 3, 130, 64, 63, 3])),
  ):
    assert got.dtype == np.float32
    assert np.all(np.abs(got - x[rows]) <= _int8_tolerance(store, "h", rows))
  decoded = store.read_rows("h", 0, n)
  assert np.all(decoded[:, 5] == 0) and np.all(decoded[:chunk, 9] == 0)
  # The small channels keep their resolution beside the outliers: ~1% of their range, not 80×.
  assert np.abs(decoded[:, 0] - x[:, 0]).max() < 0.05
  # Rescaling channels changes the scales, not the codes (powers of two: exact in float).
  factors = 2.0 ** np.arange(-4, d - 4, dtype=np.float32)
  q, delta = int8.quantize(x[:chunk] * factors)
  np.testing.assert_array_equal(q, int8.quantize(x[:chunk])[0])
  np.testing.assert_array_equal(delta[delta != 1], (scales[0] * factors)[delta != 1])


def test_int8_writes_must_be_whole_chunks(tmp_path):
  store = ActivationStore.create(
    tmp_path, hooks={"h": 4}, n_rows=100, rows_table=np.zeros((100, 3), np.int32),
    windows=np.zeros((1, 4), np.int32), dtype="int8", chunk_rows=32,
  )  # fmt: skip
  block = np.ones((32, 4), np.float32)
  for start, values in ((16, block), (0, block[:20]), (32, np.ones((40, 4), np.float32))):
    with pytest.raises(JaxsaeError, match="whole chunks of 32 rows"):
      store.write_rows("h", start, values)
  with pytest.raises(JaxsaeError, match="has 4 rows, not 32"):
    store.write_chunk_async("h", 3, block)  # The last chunk holds rows 96..99.
  store.write_rows("h", 32, np.ones((64, 4), np.float32))  # Two whole chunks at once: fine.
  store.write_chunk_async("h", 3, block[:4]).result()  # The short last chunk.
  np.testing.assert_array_equal(store.read_rows("h", 32, 100), np.ones((68, 4), np.float32))
  with pytest.raises(JaxsaeError, match="non-finite"):
    store.write_rows("h", 0, np.full((32, 4), np.nan, np.float32))
  with pytest.raises(JaxsaeError, match="is not one of"):
    ActivationStore.create(
      tmp_path / "x", hooks={"h": 4}, n_rows=10, rows_table=np.zeros((10, 3), np.int32),
      windows=np.zeros((1, 4), np.int32), dtype="int4",
    )  # fmt: skip


def _raw_files(directory):
  return {
    str(p.relative_to(directory)): p.read_bytes()
    for sub in ("acts", "scales")
    for p in sorted((directory / sub).rglob("*"))
    if p.is_file()
  }


def test_an_interrupted_int8_harvest_resumes_to_the_same_bytes(lm, windows, tmp_path):
  settings = dict(batch_size=4, chunk_rows=50, dtype="int8", progress=False)
  full = harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "full", **settings)
  cut = harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "cut", stop_after_chunks=3, **settings)
  assert not cut.meta["complete"] and cut.meta["rows_written"] == 150
  resumed = harvest_lib.harvest(lm, windows, HOOKS, tmp_path / "cut", **settings)
  assert resumed.meta["complete"] and resumed.meta["scales"] == "per_chunk_channel"
  files = _raw_files(tmp_path / "full")
  assert any(k.startswith("scales/") for k in files) and files == _raw_files(tmp_path / "cut")
  exact = harvest_lib.harvest(
    lm, windows, HOOKS, tmp_path / "f32", batch_size=4, chunk_rows=50, progress=False
  )
  rows = np.arange(full.n_rows)
  for hook in HOOKS:
    x, decoded = exact.read_rows(hook, 0, exact.n_rows), full.read_rows(hook, 0, full.n_rows)
    assert np.all(np.abs(decoded - x) <= _int8_tolerance(full, hook, rows))
    assert np.abs(decoded - x).max() > 0  # Really quantized.
  assert full.stored_bytes() < exact.stored_bytes() / 3


def _numbered_store(tmp_path, n_rows=1000, chunk_rows=64):
  """A store whose row i holds the value i, to track rows through shuffling."""
  store = ActivationStore.create(
    tmp_path,
    hooks={"h": 2},
    n_rows=n_rows,
    rows_table=np.zeros((n_rows, 3), np.int32),
    windows=np.zeros((1, 4), np.int32),
    chunk_rows=chunk_rows,
  )
  values = np.repeat(np.arange(n_rows, dtype=np.float32)[:, None], 2, axis=1)
  store.write_rows("h", 0, values)
  store.update_meta(rows_written=n_rows, complete=True)
  return store


def test_the_reader_yields_every_row_once_per_epoch_and_resumes(tmp_path):
  source = StoreSource(_numbered_store(tmp_path), "h", shuffle_chunks=3)
  it = source.train_batches(100, seed=7)
  epoch = np.concatenate([next(it)[:, 0] for _ in range(10)])
  assert sorted(epoch.astype(int)) == list(range(1000))
  assert not np.array_equal(epoch, np.arange(1000))  # Shuffled…
  assert len({int(v) // 64 for v in epoch[:100]}) <= 4  # …within a few chunks at a time.
  second = np.concatenate([next(it)[:, 0] for _ in range(10)])
  assert sorted(second.astype(int)) == list(range(1000)) and not np.array_equal(epoch, second)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  again = source.train_batches(100, seed=7)
  again.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(again), e)
  halves = [source.train_batches(100, seed=7, process_index=p, process_count=2) for p in (0, 1)]
  np.testing.assert_array_equal(
    np.concatenate([next(h) for h in halves]), epoch[:100, None].repeat(2, 1)
  )


def test_batches_that_do_not_split_over_processes_or_fit_the_source_are_named(tmp_path):
  store = StoreSource(_numbered_store(tmp_path, n_rows=100), "h")
  arrays = row_sources.ArraySource(np.zeros((100, 2), np.float32))
  for source in (store, arrays):
    with pytest.raises(JaxsaeError, match="not divisible by the 4 processes; use a multiple of 4"):
      row_sources.train_batches(source, 66, seed=0, process_count=4)
    with pytest.raises(JaxsaeError, match="has 100 rows, fewer than one batch of 128"):
      row_sources.train_batches(source, 128, seed=0)
  with pytest.raises(JaxsaeError, match=re.escape(f"the store at {tmp_path}") + ".*harvest more"):
    store.train_batches(128, seed=0)


def test_the_reader_reads_each_chunk_once_per_epoch(tmp_path, monkeypatch):
  store = _numbered_store(tmp_path)
  reads = []
  read_chunk = ActivationStore.read_chunk
  monkeypatch.setattr(
    ActivationStore, "read_chunk", lambda self, h, i: reads.append(i) or read_chunk(self, h, i)
  )
  it = StoreSource(store, "h", shuffle_chunks=3).train_batches(100, seed=7)
  for _ in range(20):  # Two epochs.
    next(it)
  # At most one more group read ahead (prefetch); grain's defaults read each chunk ~15 times.
  assert 2 * store.n_chunks <= len(reads) <= 2 * store.n_chunks + 3


def test_streaming_rows_equal_the_models_and_batches_resume(lm, windows):
  from jaxsae.activations.streaming import StreamingSource

  source = StreamingSource(lm, windows, HOOKS[0])
  assert len(source) == int((windows != 256).sum()) and source.d_in == 128
  _, cache = lm.run(windows, capture=HOOKS[:1])
  picked = np.array([0, 5, 40, len(source) - 1])
  w, p, _ = source.plan[picked].T
  np.testing.assert_allclose(source.rows(picked), np.asarray(cache[HOOKS[0]])[w, p], atol=1e-5)
  it = source.train_batches(48, seed=3)
  first = next(it)
  assert first.shape == (48, 128)
  state = it.get_state()
  second = next(it)
  again = source.train_batches(48, seed=3)
  again.set_state(state)
  np.testing.assert_array_equal(next(again), second)
  flat = np.asarray(cache[HOOKS[0]]).reshape(-1, 128)
  distances = np.abs(first[:, None, :] - flat[None]).max(-1).min(-1)  # Every row is a real one.
  assert distances.max() < 1e-4


def test_streamed_batches_run_at_most_a_few_forwards_ahead_of_the_trainer(lm, windows):
  """One forward at a time, a couple of batches ahead: grain's default read options ran 16
  forwards at once and queued up to 500 batches, which filled the host's memory on Gemma."""
  import threading
  import time

  from jaxsae.activations.streaming import StreamingSource

  source = StreamingSource(lm, windows, HOOKS[0])
  made, running, most = [], [0], [0]
  lock, batch = threading.Lock(), source.batch

  def counted(*args):
    with lock:
      running[0] += 1
      most[0] = max(most[0], running[0])
    time.sleep(0.01)
    out = batch(*args)
    with lock:
      running[0] -= 1
      made.append(1)
    return out

  source.batch = counted
  it = source.train_batches(16, seed=0)
  next(it)
  time.sleep(1.0)  # Time for dozens of batches, were the reader unbounded.
  assert most[0] == 1 and len(made) <= 4


def test_a_streamed_sample_is_whole_windows_and_one_forward_gives_its_pairs(lm, windows):
  from jaxsae.activations.streaming import StreamingSource
  from jaxsae.sae import row_sources

  source = StreamingSource(lm, windows, HOOKS[0], target_hook=HOOKS[1])
  index = row_sources.sample_indices(source, 40, seed=1)
  assert len(index) == 40 and np.all(np.diff(index) > 0)
  np.testing.assert_array_equal(index, row_sources.sample_indices(source, 40, seed=1))
  used = np.unique(source.plan[index, 0])
  per_window = np.bincount(source.plan[:, 0], minlength=len(windows))
  assert per_window[used[:-1]].sum() < 40 <= per_window[used].sum()  # As few windows as hold 40.
  calls = []
  capture = source._capture
  source._capture = lambda *a: calls.append(1) or capture(*a)
  inputs, targets = source.rows(index), source.target_rows(index)
  assert len(calls) == 1  # Both sides of the pair from one forward.
  _, cache = lm.run(windows, capture=HOOKS[:2])
  w, pos, _ = source.plan[index].T
  np.testing.assert_allclose(inputs, np.asarray(cache[HOOKS[0]])[w, pos], atol=1e-5)
  np.testing.assert_allclose(targets, np.asarray(cache[HOOKS[1]])[w, pos], atol=1e-5)


def test_skip_first_leaves_the_first_positions_of_every_window_out(lm, windows, tmp_path):
  sep = lm.tokenizer.separator_id
  every = harvest_lib.plan_rows(windows, sep, skip_separator=False)
  rows = harvest_lib.plan_rows(windows, sep, skip_separator=False, skip_first=2)
  np.testing.assert_array_equal(rows, every[every[:, 1] >= 2])
  store = harvest_lib.harvest(
    lm, windows, ["blocks.0.resid_post"], tmp_path / "s", chunk_rows=64, skip_first=1,
    progress=False,
  )  # fmt: skip
  table = store.rows_table()
  assert table[:, 1].min() == 1 and store.meta["skip_first"] == 1
  with pytest.raises(JaxsaeError, match="skip_first"):
    harvest_lib.plan_rows(windows, sep, True, skip_first=windows.shape[1])


def test_store_fvu_of_an_int8_store_against_its_float32_twin(tmp_path):
  rng = np.random.default_rng(1)
  n, d = 200, 6
  x = (rng.standard_normal((n, d)) * [1, 2, 50, 1, 1, 3] + 4).astype(np.float32)
  stores = {}
  for dtype in ("float32", "int8"):
    stores[dtype] = ActivationStore.create(
      tmp_path / dtype, hooks={"h": d}, n_rows=n, rows_table=np.zeros((n, 3), np.int32),
      windows=np.zeros((1, 4), np.int32), dtype=dtype, chunk_rows=64,
    )  # fmt: skip
    stores[dtype].write_rows("h", 0, x)
  decoded = stores["int8"].read_rows("h", 0, n).astype(np.float64)
  expected = np.sum((decoded - x) ** 2) / np.sum((x - x.mean(0)) ** 2)
  got = store_precision.store_fvu(stores["int8"], stores["float32"], "h")
  assert got == pytest.approx(expected, rel=1e-6) and 0 < got < 1e-3
  assert store_precision.store_fvu(stores["float32"], stores["float32"], "h") == 0.0
  assert stores["int8"].stored_bytes() < stores["float32"].stored_bytes() / 2
