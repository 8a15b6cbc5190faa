"""Dataset corpora: every file format splits and packs the same documents the same way."""

import json
import random

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import load_config
from jaxsae import main_job
from jaxsae.errors import CorpusError
from jaxsae.lm import train
from jaxsae.models import pretrained
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import hf_datasets, pipeline
from jaxsae.text.tokenizer import ByteTokenizer

FRACTIONS = dict(validation_fraction=0.2, test_fraction=0.2)
ROWS = [
  {"doc_id": f"doc-{i}", "text": f"def f{i}(x):\n  return x * {i}\n" * (1 + i % 3)}
  for i in range(60)
]


@pytest.fixture(autouse=True, scope="module")
def _quiet_and_cached_in_tmp(tmp_path_factory):
  """No progress bars, and the Arrow cache of loaded files in a temporary folder."""
  cache = datasets.config.HF_DATASETS_CACHE
  datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_cache")
  datasets.disable_progress_bars()
  yield
  datasets.enable_progress_bars()
  datasets.config.HF_DATASETS_CACHE = cache


def _write(tmp_path, rows, fmt: str, name: str = "data"):
  """`rows` written in one format under tmp_path; returns the corpus source string."""
  if fmt == "jsonl":
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  elif fmt == "json":
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(rows))
  elif fmt == "parquet":
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
  elif fmt in ("arrow", "saved"):
    path = tmp_path / name
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    if fmt == "arrow":  # The bare Arrow file that save_to_disk writes.
      path = next(path.glob("*.arrow"))
  elif fmt == "shards":  # A folder of jsonl shards, found under the default "**/*.py" pattern.
    path = tmp_path / name
    path.mkdir()
    for k in range(3):
      shard = rows[k * len(rows) // 3 : (k + 1) * len(rows) // 3]
      (path / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shard))
  return str(path)


def _splits(corpus):
  return {s: corpus.read(s) for s in corpus_lib.SPLITS}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "arrow", "saved", "shards"])
def test_every_format_splits_the_same_documents_by_row_index(tmp_path, fmt):
  corpus = corpus_lib.discover(_write(tmp_path, ROWS, fmt), **FRACTIONS)
  assert isinstance(corpus, hf_datasets.DatasetCorpus)
  expected = {s: [] for s in corpus_lib.SPLITS}
  for i, row in enumerate(ROWS):
    expected[corpus_lib.split_of(str(i), 0.2, 0.2)].append(row["text"].encode())
  assert _splits(corpus) == expected
  assert all(expected.values())


def test_an_id_column_makes_splits_independent_of_row_and_file_order(tmp_path):
  shuffled = ROWS[:]
  random.Random(0).shuffle(shuffled)
  a = corpus_lib.discover(_write(tmp_path, ROWS, "jsonl", "a"), id_column="doc_id", **FRACTIONS)
  (tmp_path / "b").mkdir()
  for k, name in enumerate(["z", "m", "a"]):  # Shard names sort in another order than written.
    shard = shuffled[k * 20 : (k + 1) * 20]
    _write(tmp_path / "b", shard, "parquet", name)
  b = corpus_lib.discover(str(tmp_path / "b" / "*.parquet"), id_column="doc_id", **FRACTIONS)
  for split in corpus_lib.SPLITS:
    assert sorted(a.read(split)) == sorted(b.read(split))
    want = {r["text"].encode() for r in ROWS if corpus_lib.split_of(r["doc_id"], 0.2, 0.2) == split}
    assert set(a.read(split)) == want


def test_packing_equals_the_text_file_path(tmp_path):
  corpus = corpus_lib.discover(_write(tmp_path, ROWS, "parquet"), **FRACTIONS)
  (tmp_path / "texts").mkdir()
  docs = corpus.read("train")
  for i, doc in enumerate(docs):  # Names that sort in document order.
    (tmp_path / "texts" / f"{i:03d}.txt").write_bytes(doc)
  text_docs = [f.read_bytes() for f in corpus_lib.discover(tmp_path / "texts", "*.txt").files]
  tok = ByteTokenizer()
  split = pipeline.load_split(corpus, "train", tok, seq_len=16)
  np.testing.assert_array_equal(split.stream, pipeline.token_stream(text_docs, tok))
  assert split.n_documents == len(docs) and split.n_bytes == sum(map(len, docs))
  bos = pipeline.load_windows(corpus, "train", tok, 16, bos=True)
  assert bos[0][0] == tok.separator_id and bos[0].shape == (17,)


def test_pretokenized_ids_are_packed_as_they_are_and_checked_against_the_vocab(tmp_path):
  rows = [{"input_ids": [i, i + 1, i + 2], "text": 5} for i in range(0, 200, 3)]
  source = _write(tmp_path, rows, "jsonl")
  corpus = corpus_lib.discover(source, input_ids_column="input_ids", **FRACTIONS)
  tok = ByteTokenizer()
  split = pipeline.load_split(corpus, "train", tok, seq_len=8)
  train_rows = [i for i in range(len(rows)) if corpus_lib.split_of(str(i), 0.2, 0.2) == "train"]
  chosen = [rows[i]["input_ids"] for i in train_rows]
  sep = tok.separator_id
  assert split.stream.tolist() == [t for ids in chosen for t in [sep, *ids]]
  assert split.n_bytes == 3 * len(chosen)  # Bytes are one byte each.
  low, high = min(map(min, chosen)), max(map(max, chosen))
  message = rf'"input_ids" holds ids from {low} to {high}, outside .* vocabulary of 100 ids'
  with pytest.raises(CorpusError, match=message):
    pipeline.load_split(corpus, "train", tok, seq_len=8, vocab_size=100)
  with pytest.raises(CorpusError, match='text column "text" holds int64, not strings'):
    corpus.read("train")  # The text path still checks its column.


def test_grain_batches_resume_bitwise(tmp_path):
  corpus = corpus_lib.discover(_write(tmp_path, ROWS, "shards"), **FRACTIONS)
  windows = pipeline.load_split(corpus, "train", ByteTokenizer(), seq_len=16).windows
  it = pipeline.train_batches(windows, 4, seed=7)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(4)]
  resumed = pipeline.train_batches(windows, 4, seed=7)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["tokens"], want)


def _train_texts(rows):
  """The texts of `rows` whose row index hashes to train."""
  return [
    r["text"].encode()
    for i, r in enumerate(rows)
    if corpus_lib.split_of(str(i), 0.2, 0.2) == "train"
  ]


def test_max_documents_takes_the_first_rows(tmp_path):
  capped = corpus_lib.discover(_write(tmp_path, ROWS, "jsonl"), max_documents=30, **FRACTIONS)
  assert capped.read("train") == _train_texts(ROWS[:30])


def test_bad_input_names_the_problem_and_the_fix(tmp_path):
  source = _write(tmp_path, ROWS, "jsonl")
  with pytest.raises(CorpusError, match=r'no text column "body".*set data.text_column'):
    corpus_lib.discover(source, text_column="body").read("train")
  with pytest.raises(CorpusError, match=r'no column "uid" \(data.id_column\)'):
    corpus_lib.discover(source, id_column="uid").read("train")
  with pytest.raises(CorpusError, match="local data files form one split"):
    corpus_lib.discover(source, split="test").read("train")
  with pytest.raises(CorpusError, match=r'"validation" split of the dataset .* is empty'):
    corpus_lib.discover(source, max_documents=1).read("validation")
  saved = tmp_path / "dict"
  datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(saved))
  with pytest.raises(CorpusError, match=r"no split \"dev\"; it has \['train'\]: set data.split"):
    corpus_lib.discover(saved, split="dev").read("train")
  assert corpus_lib.discover(saved, **FRACTIONS).read("test")
  (tmp_path / "mixed").mkdir()
  _write(tmp_path / "mixed", ROWS[:3], "jsonl")
  _write(tmp_path / "mixed", ROWS[:3], "parquet")
  with pytest.raises(CorpusError, match=r"mixes file formats \['.jsonl', '.parquet'\]"):
    corpus_lib.discover(tmp_path / "mixed")


def test_hub_ids_stream_and_fail_offline_with_the_download_recipe(monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  corpus = corpus_lib.discover("hf:someone/tiny-corpus:en", split="validation")
  assert corpus.location.hub_id == "someone/tiny-corpus" and corpus.location.hub_config == "en"
  recipe = (
    r"load_dataset\('someone/tiny-corpus', 'en', split='validation'\)\.save_to_disk\('PATH'\)"
    r".*data.corpus=PATH"
  )
  with pytest.raises(
    CorpusError, match=r'cannot stream the Hub dataset "someone/tiny-corpus".*' + recipe
  ):
    corpus.read("train")
  monkeypatch.delenv("HF_DATASETS_OFFLINE")

  def unreachable(*args, **kwargs):
    raise ConnectionError("no route to huggingface.co")

  monkeypatch.setattr(datasets, "load_dataset", unreachable)
  with pytest.raises(CorpusError, match="no route to huggingface.co.*save_to_disk"):
    corpus_lib.discover("hf:someone/tiny-corpus").read("train")
  with pytest.raises(CorpusError, match="not a Hub dataset spec"):
    corpus_lib.discover("hf:a/b/c")


def test_a_streamed_dataset_is_read_in_order_up_to_the_cap(monkeypatch):
  """The streaming path, on in-memory rows standing in for the Hub's stream."""
  calls = []

  def fake_load(hub_id, config, split, streaming):
    calls.append((hub_id, config, split, streaming))
    return iter(ROWS)  # Rows as dicts, as an IterableDataset yields them (and ~3 s faster).

  monkeypatch.setattr(datasets, "load_dataset", fake_load)
  corpus = corpus_lib.discover("hf:someone/code", max_documents=40, **FRACTIONS)
  assert corpus.read("train") == _train_texts(ROWS[:40])
  corpus.read("validation")  # Read once for every split.
  assert calls == [("someone/code", None, "train", True)]


def test_lm_and_harvest_configs_read_dataset_fields(tmp_path):
  """LM training's data path (no compile) on a jsonl corpus, and the harvest's fields."""
  config = load_config("lm_tiny")
  config.data.corpus = _write(tmp_path, ROWS * 4, "jsonl")
  config.data.update(FRACTIONS, seq_len=16, max_documents=200)
  run = train.build(config)
  assert len(run.train.windows) > len(run.validation.windows) > 0
  assert run.train.n_documents + run.validation.n_documents < 200
  batch = next(pipeline.train_batches(run.train.windows, 8, seed=0))
  assert batch["tokens"].shape == (8, 17)

  h = main_job.base_config().harvest
  rows = [{"ids": [i % 250] * 5, "key": f"k{i}"} for i in range(80)]
  h.update(corpus=_write(tmp_path, rows, "parquet"), input_ids_column="ids", id_column="key")
  corpus = corpus_lib.from_config(h, 0.2, 0.2)
  windows = pipeline.load_windows(corpus, "train", ByteTokenizer(), 8, bos=True, vocab_size=257)
  keys = {r["key"] for r in rows if corpus_lib.split_of(r["key"], 0.2, 0.2) == "train"}
  assert windows.inner.stream.size == 6 * len(keys)


def test_the_main_job_harvests_a_jsonl_corpus(tmp_path):
  config = main_job.base_config()
  config.harvest.update(corpus=_write(tmp_path, ROWS * 8, "jsonl"), seq_len=32, batch_size=8)
  config.harvest.update(train_windows=16, eval_windows=8, chunk_rows=128, max_documents=400)
  harvested = main_job.harvest_stores(config, pretrained.load("default"), tmp_path / "work")
  assert harvested.eval_windows.shape == (8, 33)
  assert 0 < len(harvested.train) <= 16 * 32  # Less the separator positions, which are skipped.
