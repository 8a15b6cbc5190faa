"""Corpus discovery and a deterministic train/validation/test split by file-path hash.

The default corpus is the Python source of the running interpreter's standard library: real
code, present on every machine, nothing to download. Any directory, file or glob of text files
works the same way. A file's split depends only on its path relative to the corpus root, so
adding or removing files never moves another file between splits. Datasets (.jsonl, .json,
.parquet, .arrow files, `save_to_disk` folders, "hf:owner/name" Hub ids) are split by row
instead, in `jaxsae.text.hf_datasets`; `discover` picks one or the other by the source.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pathlib
import sysconfig
from typing import TYPE_CHECKING

from jaxsae.errors import CorpusError

if TYPE_CHECKING:
  from jaxsae.text.hf_datasets import DatasetCorpus

SPLITS = ("train", "validation", "test")
STDLIB = "stdlib"
# Shares of files (datasets: rows) held out for validation and test where a config or a model
# names none: data.* of jaxsae.lm.config, and so every model exported from it, start from these.
VALIDATION_FRACTION = 0.02
TEST_FRACTION = 0.02
# The dataset fields of a corpus config section (data.*, harvest.*) and their defaults; text
# corpora ignore them. Their meaning: jaxsae.lm.config.base_config.
DATASET_DEFAULTS = {
  "split": "train",
  "text_column": "text",
  "input_ids_column": "",
  "id_column": "",
  "max_documents": 0,
}
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> pathlib.Path:
  """The directory holding the running interpreter's standard library."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str, validation_fraction: float, test_fraction: float) -> str:
  """The split of one file: its path's SHA-256 read as a number in [0, 1)."""
  digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
  u = int.from_bytes(digest[:8], "big") / 2**64
  if u < test_fraction:
    return "test"
  if u < test_fraction + validation_fraction:
    return "validation"
  return "train"


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A sorted list of text files under one root, and their split by path hash."""

  root: pathlib.Path
  files: tuple[pathlib.Path, ...]
  validation_fraction: float = VALIDATION_FRACTION
  test_fraction: float = TEST_FRACTION

  def relative(self, path: pathlib.Path) -> str:
    return path.relative_to(self.root).as_posix() if path != self.root else path.name

  def split_files(self, split: str) -> list[pathlib.Path]:
    """The files of one split, in sorted path order."""
    if split not in SPLITS:
      raise CorpusError(f'unknown split "{split}"; use one of {SPLITS}')
    chosen = [
      f
      for f in self.files
      if split_of(self.relative(f), self.validation_fraction, self.test_fraction) == split
    ]
    if not chosen:
      raise CorpusError(
        f'the "{split}" split of the corpus at {self.root} is empty ({len(self.files)} files in '
        "all); add files or raise data.validation_fraction / data.test_fraction"
      )
    return chosen

  def read(self, split: str) -> list[bytes]:
    """The non-empty documents of one split, as raw bytes."""
    docs = [f.read_bytes() for f in self.split_files(split)]
    return [d for d in docs if d]


def discover(
  source: str | os.PathLike | None = STDLIB,
  pattern: str = "**/*.py",
  validation_fraction: float = VALIDATION_FRACTION,
  test_fraction: float = TEST_FRACTION,
  **dataset_options,
) -> Corpus | DatasetCorpus:
  """Find the corpus files: a `Corpus`, or for a dataset source a `hf_datasets.DatasetCorpus`
  (same `read(split)`).

  Args:
    source: "stdlib" (or empty) for the standard library; a directory (searched with
      `pattern`); a single file; or a glob such as "data/**/*.txt". Datasets: .jsonl, .json,
      .parquet or .arrow files (one, a glob, or a folder of them), a `save_to_disk` folder, or
      "hf:owner/name[:config]" streamed from the Hub.
    pattern: the glob used under a directory source.
    validation_fraction, test_fraction: the expected share of files in each held-out split.
    **dataset_options: for datasets, fields of DATASET_DEFAULTS (split, text_column, ...).
  """
  source = STDLIB if source in (None, "") else str(source)
  unknown = set(dataset_options) - set(DATASET_DEFAULTS)
  if unknown:
    raise TypeError(f"unknown dataset options {sorted(unknown)}; known: {list(DATASET_DEFAULTS)}")
  if source != STDLIB:
    from jaxsae.text import hf_datasets  # Here: it imports this module.

    location = hf_datasets.locate(source, pattern)
    if location is not None:
      options = hf_datasets.Options(**dataset_options)
      return hf_datasets.DatasetCorpus(location, validation_fraction, test_fraction, options)
  if source == STDLIB:
    root, files = stdlib_root(), _glob_under(stdlib_root(), pattern)
  elif any(ch in source for ch in "*?["):
    matches = sorted(pathlib.Path(p) for p in glob.glob(source, recursive=True))
    files = [p for p in matches if p.is_file()]
    root = pathlib.Path(os.path.commonpath([str(p) for p in files])) if files else pathlib.Path(".")
    if len(files) == 1:
      root = files[0].parent
  else:
    path = pathlib.Path(source).expanduser()
    if not path.exists():
      raise CorpusError(
        f"corpus path {path} does not exist; set data.corpus to a directory, a file or a glob of "
        'text files, or to "stdlib" for the Python standard library'
      )
    root, files = (path, _glob_under(path, pattern)) if path.is_dir() else (path.parent, [path])
  files = [f for f in files if not _EXCLUDED_DIRS.intersection(f.parts)]
  if not any(f.stat().st_size for f in files):
    raise CorpusError(
      f'the corpus "{source}" (pattern "{pattern}") has no non-empty files; point data.corpus '
      "at text files or change data.pattern"
    )
  return Corpus(root, tuple(sorted(files)), validation_fraction, test_fraction)


def from_config(
  section, validation_fraction: float | None = None, test_fraction: float | None = None
) -> Corpus | DatasetCorpus:
  """The corpus a config section (data.*, harvest.*) or a model's metadata dict names; fields
  it lacks (older configs) take their defaults. Fractions default to the section's own."""
  get = section.get
  return discover(
    get("corpus", STDLIB),
    get("pattern", "**/*.py"),
    get("validation_fraction", VALIDATION_FRACTION)
    if validation_fraction is None
    else validation_fraction,
    get("test_fraction", TEST_FRACTION) if test_fraction is None else test_fraction,
    **dataset_fields(section),
  )


def dataset_fields(section) -> dict:
  """The dataset fields of a config section, defaults filled in (for model metadata)."""
  return {k: section.get(k, v) for k, v in DATASET_DEFAULTS.items()}


def _glob_under(root: pathlib.Path, pattern: str) -> list[pathlib.Path]:
  return sorted(p for p in root.glob(pattern) if p.is_file())
