"""Corpus discovery and a deterministic train/validation/test split by file-path hash.

The default corpus is the Python source of the running interpreter's standard library: real
code, present on every machine, nothing to download. Any directory, file or glob of text files
works the same way. A file's split depends only on its path relative to the corpus root, so
adding or removing files never moves another file between splits.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import pathlib
import sysconfig

from jaxsae.errors import CorpusError

SPLITS = ("train", "validation", "test")
STDLIB = "stdlib"
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
  validation_fraction: float = 0.02
  test_fraction: float = 0.02

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
  validation_fraction: float = 0.02,
  test_fraction: float = 0.02,
) -> Corpus:
  """Find the corpus files.

  Args:
    source: "stdlib" (or empty) for the standard library; a directory (searched with
      `pattern`); a single file; or a glob such as "data/**/*.txt".
    pattern: the glob used under a directory source.
    validation_fraction, test_fraction: the expected share of files in each held-out split.
  """
  source = STDLIB if source in (None, "") else str(source)
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


def _glob_under(root: pathlib.Path, pattern: str) -> list[pathlib.Path]:
  return sorted(p for p in root.glob(pattern) if p.is_file())
