"""Corpora from datasets: local .jsonl/.json/.parquet/.arrow files (single, folders, globs),
`datasets.save_to_disk` folders, and Hugging Face Hub ids streamed as "hf:owner/name[:config]".

A document is a row: its text column (tokenized like a text file), or with `input_ids_column`
its token ids, used as-is. A row's split is `corpus.split_of` of its key, the value of
`id_column` or else its row index within the dataset's own split (files in sorted path order),
so it is the same on every machine and in every file format. Streams are read in order, capped
at `max_documents` rows. Everything is read with `datasets` (and pyarrow), imported on first
use so text corpora do not need it.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import itertools
import os
import pathlib
import re

import numpy as np

from jaxsae.errors import CorpusError
from jaxsae.text.corpus import SPLITS, TEST_FRACTION, VALIDATION_FRACTION, split_of

HUB_PREFIX = "hf:"
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclasses.dataclass(frozen=True)
class Options:
  """How rows become documents (the data.* / harvest.* fields of the same names)."""

  split: str = "train"
  text_column: str = "text"
  input_ids_column: str = ""
  id_column: str = ""
  max_documents: int = 0


@dataclasses.dataclass(frozen=True)
class Location:
  """Where a dataset is: kind "files" (paths, one builder), "saved" (a folder) or "hub"."""

  kind: str
  name: str  # The source as given, for messages.
  files: tuple[pathlib.Path, ...] = ()
  builder: str = ""
  hub_id: str = ""
  hub_config: str | None = None


def locate(source: str, pattern: str) -> Location | None:
  """The dataset `source` names, or None when it is a text corpus (then corpus.py reads it)."""
  if source.startswith(HUB_PREFIX):
    spec = source[len(HUB_PREFIX) :]
    hub_id, _, config = spec.partition(":")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", hub_id):
      raise CorpusError(
        f'"{source}" is not a Hub dataset spec; write hf:owner/name or hf:owner/name:config'
      )
    return Location("hub", source, hub_id=hub_id, hub_config=config or None)
  if any(ch in source for ch in "*?["):
    matches = sorted(pathlib.Path(p) for p in glob.glob(source, recursive=True))
    return _files(source, [p for p in matches if p.is_file()])
  path = pathlib.Path(source).expanduser()
  if path.is_file():
    return _files(source, [path])
  if not path.is_dir():
    return None
  saved = ("dataset_dict.json",), ("state.json", "dataset_info.json")  # What save_to_disk writes.
  if any(all((path / name).is_file() for name in names) for names in saved):
    return Location("saved", source, files=(path,))
  matched = []
  for p in path.glob(pattern):
    if p.is_file() and p.suffix not in BUILDERS:
      return None  # A text corpus; stop at its first file.
    matched += [p] if p.is_file() else []
  if not matched:  # e.g. a folder of shards under the default "**/*.py" pattern.
    matched = [p for p in path.rglob("*") if p.is_file() and p.suffix in BUILDERS]
  return _files(source, matched)


def _files(source: str, paths: list[pathlib.Path]) -> Location | None:
  """A "files" location when every path is a data file of one format; None otherwise."""
  if not paths or any(p.suffix not in BUILDERS for p in paths):
    return None
  builders = {BUILDERS[p.suffix] for p in paths}
  if len(builders) > 1:
    suffixes = sorted({p.suffix for p in paths})
    raise CorpusError(
      f'the dataset "{source}" mixes file formats {suffixes}; keep one format or choose one '
      f'with data.pattern (e.g. "**/*{suffixes[0]}")'
    )
  return Location("files", source, files=tuple(sorted(paths)), builder=builders.pop())


class DatasetCorpus:
  """A dataset's documents split by key hash; reads like `corpus.Corpus`, plus `read_ids`."""

  def __init__(
    self,
    location: Location,
    validation_fraction: float = VALIDATION_FRACTION,
    test_fraction: float = TEST_FRACTION,
    options: Options = Options(),
  ):
    if options.max_documents < 0:
      raise CorpusError(f"data.max_documents={options.max_documents} must be >= 0 (0: all)")
    self.location, self.options = location, options
    self._read: dict[str, tuple[list[str], list]] = {}  # Column -> (splits, documents).
    self.validation_fraction, self.test_fraction = validation_fraction, test_fraction

  @property
  def root(self) -> str | pathlib.Path:
    return self.location.files[0] if self.location.kind == "saved" else self.location.name

  @property
  def files(self) -> tuple[pathlib.Path, ...]:
    return self.location.files

  @property
  def pretokenized(self) -> bool:
    return bool(self.options.input_ids_column)

  @property
  def input_ids_column(self) -> str:
    return self.options.input_ids_column

  def read(self, split: str) -> list[bytes]:
    """The non-empty texts of one split, UTF-8 encoded, in dataset order."""
    docs = self._split_docs(self._rows(self.options.text_column), split)
    return [d.encode("utf-8") for d in docs]

  def read_ids(self, split: str) -> list[np.ndarray]:
    """The non-empty token-id documents (int64) of one split, in dataset order."""
    if not self.pretokenized:
      raise CorpusError("this corpus is text; set data.input_ids_column to read token ids")
    return self._split_docs(self._rows(self.options.input_ids_column), split)

  def _split_docs(self, rows: tuple[list[str], list], split: str) -> list:
    """The non-empty documents whose row hashes to `split`."""
    if split not in SPLITS:
      raise CorpusError(f'unknown split "{split}"; use one of {SPLITS}')
    splits, docs = rows
    chosen = [d for s, d in zip(splits, docs, strict=True) if s == split and len(d)]
    if not chosen:
      raise CorpusError(
        f'the "{split}" split of the dataset "{self.location.name}" is empty ({len(docs)} '
        "documents in all); add documents, raise data.max_documents, or raise "
        "data.validation_fraction / data.test_fraction"
      )
    return chosen

  def _rows(self, column: str) -> tuple[list[str], list]:
    """(split, document) of every row, read once: str for text, int64 arrays for token ids."""
    if column not in self._read:
      read = self._stream_rows if self.location.kind == "hub" else self._load_rows
      keys, docs = read(column)
      fractions = self.validation_fraction, self.test_fraction
      self._read[column] = [split_of(k, *fractions) for k in keys], docs
    return self._read[column]

  def _load_rows(self, column: str) -> tuple[list[str], list]:
    ds = self._load()
    _check_columns(ds.column_names, column, self.options, self.location.name)
    if self.options.max_documents:
      ds = ds.select(range(min(self.options.max_documents, len(ds))))
    if not len(ds):
      raise CorpusError(
        f'the dataset "{self.location.name}" (split "{self.options.split}") has no rows'
      )
    table = ds.with_format("arrow")[:]
    if self.options.id_column:
      ids = table.column(self.options.id_column)
      if ids.null_count:
        raise CorpusError(f'data.id_column "{self.options.id_column}" has empty (null) values')
      keys = [str(v) for v in ids.to_pylist()]
    else:
      keys = [str(i) for i in range(len(table))]
    if self.pretokenized and column == self.options.input_ids_column:
      return keys, _id_lists(table.column(column), column)
    return keys, _texts(table.column(column), column)

  def _load(self):
    datasets = _import_datasets()
    loc, split = self.location, self.options.split
    if loc.kind == "files":
      if split != "train":
        raise CorpusError(
          f'data.split="{split}", but local data files form one split, "train"; set '
          "data.split=train (train/validation/test are then made by hashing each row's id)"
        )
      files = [str(f) for f in loc.files]
      return datasets.load_dataset(loc.builder, data_files=files, split="train")
    loaded = datasets.load_from_disk(str(loc.files[0]))
    if isinstance(loaded, datasets.DatasetDict):
      if split not in loaded:
        raise CorpusError(
          f'the saved dataset {loc.name} has no split "{split}"; it has {sorted(loaded)}: set '
          "data.split to one of them"
        )
      return loaded[split]
    if split not in ("train", str(loaded.split)):
      raise CorpusError(
        f'data.split="{split}", but {loc.name} holds one dataset (split "{loaded.split}"); set '
        "data.split=train"
      )
    return loaded

  def _stream_rows(self, column: str) -> tuple[list[str], list]:
    loc, opts = self.location, self.options
    stream = open_stream(loc.hub_id, loc.hub_config, opts.split)
    keys, docs = [], []
    rows = itertools.islice(stream, opts.max_documents or None)
    try:
      for index, row in enumerate(rows):
        if index == 0:
          _check_columns(list(row), column, opts, loc.name)
        keys.append(str(row[opts.id_column]) if opts.id_column else str(index))
        value = row[column]
        if opts.input_ids_column and column == opts.input_ids_column:
          docs.append(_id_row(value, column, index))
        else:
          docs.append(_text_row(value, column, index))
    except _network_errors() as e:  # A stream can drop midway, too.
      raise _offline_error(loc.hub_id, loc.hub_config, opts.split, e) from e
    if not docs:
      raise CorpusError(f'the Hub dataset "{loc.hub_id}" (split "{opts.split}") has no rows')
    return keys, docs


def open_stream(hub_id: str, config: str | None, split: str):
  """`datasets.load_dataset(hub_id, config, split=split, streaming=True)`, with one clear
  CorpusError when the Hub cannot be reached, the id is unknown or the split is missing."""
  if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in _OFFLINE_VARS):
    raise _offline_error(hub_id, config, split, None)
  datasets = _import_datasets()
  try:
    return datasets.load_dataset(hub_id, config, split=split, streaming=True)
  except _network_errors() as e:
    raise _offline_error(hub_id, config, split, e) from e
  except datasets.exceptions.DatasetNotFoundError as e:
    raise CorpusError(
      f'no dataset "{hub_id}" on the Hub (or it is gated or private: accept its terms and log '
      f"in with `hf auth login`); check data.corpus ({e})"
    ) from e
  except ValueError as e:  # An unknown split or config; datasets names the ones there are.
    raise CorpusError(
      f'cannot stream split "{split}" of "{hub_id}" (config {config!r}): {e}; set data.split '
      "(and the :config of data.corpus) to ones the dataset has"
    ) from e


def _network_errors() -> tuple[type[BaseException], ...]:
  """The exceptions of a failed connection: builtin, and those of the HTTP clients under
  huggingface_hub and datasets (httpx, requests), which do not all subclass the builtin."""
  errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
  for module, name in (("httpx", "TransportError"), ("requests.exceptions", "ConnectionError")):
    try:
      errors.append(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError):
      pass
  return tuple(errors)


def _offline_error(hub_id: str, config: str | None, split: str, cause) -> CorpusError:
  args = ", ".join([repr(hub_id)] + ([repr(config)] if config else []) + [f"split={split!r}"])
  why = f" ({type(cause).__name__}: {cause})" if cause else " (offline mode is set)"
  return CorpusError(
    f'cannot stream the Hub dataset "{hub_id}": no connection to the Hub{why}. Download it on '
    f'a machine with one: python -c "import datasets; datasets.load_dataset({args})'
    ".save_to_disk('PATH')\"; copy PATH here and set data.corpus=PATH (harvest.corpus for "
    "the main job)"
  )


def _check_columns(names: list[str], column: str, opts: Options, source: str) -> None:
  for field, name in (("input_ids_column", opts.input_ids_column), ("id_column", opts.id_column)):
    if name and name not in names:
      raise CorpusError(
        f'the dataset "{source}" has no column "{name}" (data.{field}); its columns are '
        f"{sorted(names)}"
      )
  if column not in names:
    raise CorpusError(
      f'the dataset "{source}" has no text column "{column}"; its columns are {sorted(names)}: '
      "set data.text_column to the one holding text (or data.input_ids_column to one of "
      "token ids)"
    )


def _texts(column, name: str) -> list[str]:
  import pyarrow as pa

  if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
    raise CorpusError(_not_text(name, column.type))
  return [t or "" for t in column.to_pylist()]  # Null texts are empty documents (skipped).


def _text_row(value, name: str, index: int) -> str:
  if value is not None and not isinstance(value, str):
    raise CorpusError(_not_text(name, f"{type(value).__name__} (row {index})"))
  return value or ""


def _not_text(name: str, found) -> str:
  return (
    f'the text column "{name}" holds {found}, not strings; set data.text_column to a column of '
    "text, or data.input_ids_column if it holds token ids"
  )


def _id_lists(column, name: str) -> list[np.ndarray]:
  import pyarrow as pa

  kind = column.type
  if pa.types.is_fixed_size_list(kind):
    column, kind = column.cast(pa.list_(kind.value_type)), pa.list_(kind.value_type)
  if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(
    kind.value_type
  ):
    raise CorpusError(_not_ids(name, kind))
  array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
  if array.null_count or array.values.null_count:
    raise CorpusError(f'the token-id column "{name}" (data.input_ids_column) has null values')
  offsets = array.offsets.to_numpy()  # Absolute positions in `values` (slices keep them).
  values = array.values.to_numpy(zero_copy_only=False).astype(np.int64)
  return [values[offsets[i] : offsets[i + 1]] for i in range(len(array))]


def _id_row(value, name: str, index: int) -> np.ndarray:
  ids = np.asarray(value if value is not None else [], dtype=object)
  if ids.ndim != 1 or not all(isinstance(v, (int, np.integer)) for v in ids):
    raise CorpusError(_not_ids(name, f"{type(value).__name__} (row {index})"))
  return ids.astype(np.int64)


def _not_ids(name: str, found) -> str:
  return (
    f'the token-id column "{name}" holds {found}, not lists of integer ids; set '
    'data.input_ids_column to a column of token ids, or to "" to tokenize data.text_column'
  )


def _import_datasets():
  try:
    import datasets
  except ImportError as e:
    raise CorpusError(
      "dataset corpora are read with Hugging Face `datasets`; pip install 'jaxsae[hf]'"
    ) from e
  return datasets
