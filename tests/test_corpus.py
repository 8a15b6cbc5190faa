"""Corpus discovery and the path-hash split."""

import pathlib

import pytest

from jaxsae.errors import CorpusError
from jaxsae.text import corpus as corpus_lib


def test_stdlib_is_the_default_and_splits_partition_it():
  corpus = corpus_lib.discover()
  assert corpus.root == corpus_lib.stdlib_root()
  assert len(corpus.files) > 500
  assert all(f.suffix == ".py" and "site-packages" not in f.parts for f in corpus.files)
  splits = {s: set(corpus.split_files(s)) for s in corpus_lib.SPLITS}
  assert set().union(*splits.values()) == set(corpus.files)
  assert sum(len(v) for v in splits.values()) == len(corpus.files)
  held_out = len(splits["validation"]) + len(splits["test"])
  assert 0.01 < held_out / len(corpus.files) < 0.10  # 2% + 2% expected.


def test_split_depends_only_on_relative_path(tmp_path):
  for name in ("a", "b", "c"):
    (tmp_path / f"{name}.txt").write_text(name * 10)
  kwargs = dict(pattern="*.txt", validation_fraction=0.3, test_fraction=0.3)
  before = {
    f.name: corpus_lib.split_of(f.name, 0.3, 0.3)
    for f in corpus_lib.discover(tmp_path, **kwargs).files
  }
  for i in range(20):
    (tmp_path / f"extra{i}.txt").write_text("x")
  after = corpus_lib.discover(tmp_path, **kwargs)
  for f in after.files:
    if f.name in before:
      assert corpus_lib.split_of(after.relative(f), 0.3, 0.3) == before[f.name]
  # Same answer in another directory: only the relative path counts.
  other = tmp_path / "copy"
  other.mkdir()
  (other / "a.txt").write_text("a")
  assert (
    corpus_lib.split_of(corpus_lib.discover(other, "*.txt").relative(other / "a.txt"), 0.3, 0.3)
    == before["a.txt"]
  )


def test_glob_and_single_file_sources():
  root = corpus_lib.stdlib_root()
  by_glob = corpus_lib.discover(str(root / "json" / "*.py"))
  assert {f.name for f in by_glob.files} == {p.name for p in (root / "json").glob("*.py")}
  single = corpus_lib.discover(root / "json" / "decoder.py")
  assert single.files == (root / "json" / "decoder.py",)


def test_missing_and_empty_corpora_name_the_fix(tmp_path):
  with pytest.raises(CorpusError, match="does not exist; set data.corpus"):
    corpus_lib.discover(tmp_path / "nope")
  (tmp_path / "empty.py").write_text("")
  with pytest.raises(CorpusError, match="no non-empty files"):
    corpus_lib.discover(tmp_path)
  with pytest.raises(CorpusError, match="no non-empty files"):
    corpus_lib.discover(str(tmp_path / "*.missing"))
  (tmp_path / "one.py").write_text("x = 1\n")
  corpus = corpus_lib.discover(tmp_path)
  empty_split = next(
    s
    for s in ("validation", "test")
    if not [f for f in corpus.files if corpus_lib.split_of(corpus.relative(f), 0.02, 0.02) == s]
  )
  with pytest.raises(CorpusError, match="raise data.validation_fraction"):
    corpus.split_files(empty_split)


def test_read_skips_empty_documents(tmp_path):
  (tmp_path / "a.py").write_text("print(1)\n")
  (tmp_path / "b.py").write_text("")
  corpus = corpus_lib.discover(tmp_path, validation_fraction=0.001, test_fraction=0.001)
  assert corpus.read("train") == [b"print(1)\n"]
  assert isinstance(corpus.files[0], pathlib.Path)
