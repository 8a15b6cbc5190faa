"""Where an SAE's training rows come from: any indexable array of activations, via grain.

A source is anything with `__len__`, `d_in` and `rows(indices) -> float32 (len, d_in)`:
`ArraySource` wraps an in-memory array; the activation store and the streaming source of the
language-model pipeline speak the same protocol. `train_batches` walks a seeded permutation per
epoch with grain, one batch per element, and gathers each batch's rows in one call, so it is
checkpointable (the iterator's position is saved with the train state) and fast for in-memory
data.

A transcoder trains on pairs: a `PairSource` holds an input source and a target source aligned
row by row (row i of both is the same token: two hooks of one store, or two stores harvested
from the same windows), and its batches are (input rows, target rows) tuples.
"""

from __future__ import annotations

import functools
from typing import Protocol

import grain
import numpy as np

from jaxsae.errors import JaxsaeError


class ActivationSource(Protocol):
  d_in: int

  def __len__(self) -> int: ...

  def rows(self, indices: np.ndarray) -> np.ndarray: ...


class ArraySource:
  """An (N, d) array of activations held in memory (numpy, or anything numpy can index)."""

  def __init__(self, array):
    shape = getattr(array, "shape", None)
    if shape is None or len(shape) != 2:
      raise JaxsaeError(
        f"activations must be a 2-D (tokens, d) array, got shape {shape}; reshape (B, T, d) "
        "activations to (B*T, d)"
      )
    if shape[0] == 0:
      raise JaxsaeError("the activation array is empty; harvest some activations first")
    self.array = array
    self.d_in = int(shape[1])

  def __len__(self) -> int:
    return int(self.array.shape[0])

  def rows(self, indices: np.ndarray) -> np.ndarray:
    return np.asarray(self.array[np.asarray(indices)], np.float32)


class SequenceSource:
  """Rows from anything with `__len__` and `__getitem__(i) -> (d,)`, e.g. a grain MapDataset."""

  def __init__(self, rows):
    if len(rows) == 0:
      raise JaxsaeError("the activation dataset is empty; harvest some activations first")
    first = np.asarray(rows[0])
    if first.ndim != 1:
      raise JaxsaeError(f"each row must be a (d,) vector, got shape {first.shape}")
    self.rows_of, self.d_in = rows, int(first.shape[0])

  def __len__(self) -> int:
    return len(self.rows_of)

  def rows(self, indices: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(self.rows_of[int(i)], np.float32) for i in indices])


class PairSource:
  """(input, target) rows for a transcoder: `rows` are the inputs (d_in wide), `target_rows`
  the same tokens' targets (d_out wide)."""

  def __init__(self, inputs, targets):
    self.inputs, self.targets = as_source(inputs), as_source(targets)
    if len(self.inputs) != len(self.targets):
      raise JaxsaeError(
        f"the input source has {len(self.inputs)} rows and the target source "
        f"{len(self.targets)}; a transcoder needs both sites of the same tokens, row by row"
      )
    self.d_in, self.d_out = self.inputs.d_in, self.targets.d_in

  def __len__(self) -> int:
    return len(self.inputs)

  def rows(self, indices: np.ndarray) -> np.ndarray:
    return self.inputs.rows(indices)

  def target_rows(self, indices: np.ndarray) -> np.ndarray:
    return self.targets.rows(indices)

  def train_batches(
    self, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1
  ) -> grain.DatasetIterator:
    """(input rows, target rows) of each global batch: the inputs' own paired reader (an
    activation store's, which reads both in the same shuffled blocks), else shuffled indices."""
    kw = dict(seed=seed, process_index=process_index, process_count=process_count)
    if hasattr(self.inputs, "paired_batches"):
      return self.inputs.paired_batches(self.targets, batch_size, **kw)
    return _index_batches(self, batch_size, lambda i: (self.rows(i), self.target_rows(i)), **kw)


class StackedSource:
  """Several sites of the same tokens side by side: row i is [row i of each source]. A
  cross-layer transcoder's inputs (every layer's MLP input) and targets (every MLP output)."""

  def __init__(self, sources):
    self.sources = [as_source(s) for s in sources]
    if not self.sources:
      raise JaxsaeError("a stacked source needs at least one source (one per layer)")
    lengths = {len(s) for s in self.sources}
    if len(lengths) != 1:
      raise JaxsaeError(
        f"the stacked sources have {sorted(lengths)} rows: every layer's source must hold the "
        "same tokens, row by row (harvest every hook in one pass)"
      )
    self.d_in = sum(s.d_in for s in self.sources)

  def __len__(self) -> int:
    return len(self.sources[0])

  def rows(self, indices: np.ndarray) -> np.ndarray:
    return np.concatenate([s.rows(indices) for s in self.sources], axis=-1)


def is_paired(source) -> bool:
  """Whether `source` yields (input, target) pairs (a transcoder's) rather than rows."""
  return hasattr(source, "target_rows")


def as_source(data) -> ActivationSource:
  """An ActivationSource for a source, a 2-D array, or a sequence of rows (grain MapDataset)."""
  if hasattr(data, "rows") and hasattr(data, "d_in"):
    return data
  if getattr(data, "ndim", None) == 2:
    return ArraySource(data)
  if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
    return SequenceSource(data)
  raise JaxsaeError(
    f"cannot read activations from {type(data).__name__}; pass an (N, d) array, a grain "
    "MapDataset of (d,) rows, or an object with d_in, __len__ and rows(indices)"
  )


def sample_indices(source: ActivationSource, count: int, seed: int) -> np.ndarray:
  """`count` distinct row indices (all if the source is smaller), drawn reproducibly, sorted;
  a source that draws its own (a streaming source: whole windows, one forward each) does."""
  if hasattr(source, "sample_indices"):
    return np.sort(source.sample_indices(count, seed))
  rng = np.random.default_rng(seed)
  count = min(count, len(source))
  return np.sort(rng.choice(len(source), size=count, replace=False))


def sample(source: ActivationSource, count: int, seed: int) -> np.ndarray:
  """`count` distinct rows (all if the source is smaller), drawn reproducibly."""
  return source.rows(sample_indices(source, count, seed))


def train_batches(
  source: ActivationSource,
  batch_size: int,
  *,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.DatasetIterator:
  """An endless, shuffled, checkpointable iterator of this process's rows of each global batch.

  A source with its own `train_batches` (an activation store, read in shuffled blocks) supplies
  them; otherwise row indices are shuffled with grain and each batch is gathered in one call.
  """
  if hasattr(source, "train_batches"):
    return source.train_batches(
      batch_size, seed=seed, process_index=process_index, process_count=process_count
    )
  kw = dict(seed=seed, process_index=process_index, process_count=process_count)
  return _index_batches(source, batch_size, source.rows, **kw)


def local_batch_size(
  batch_size: int,
  process_count: int,
  n_rows: int | None = None,
  *,
  holder: str = "the source",
  fix: str = "lower train.batch_size or provide more activations",
) -> int:
  """This process's share of each global batch, B / process_count, once B splits evenly over
  the processes and (given n_rows) `holder` has at least one whole batch of rows. Every source
  (arrays here, activation stores, streamed activations) checks its batches with this."""
  if batch_size % process_count:
    raise JaxsaeError(
      f"batch size {batch_size} is not divisible by the {process_count} processes; use a "
      f"multiple of {process_count}"
    )
  if n_rows is not None and n_rows < batch_size:
    raise JaxsaeError(f"{holder} has {n_rows} rows, fewer than one batch of {batch_size}; {fix}")
  return batch_size // process_count


_EPOCHS = 1 << 40  # "Forever": grain datasets are lazy, so this costs nothing.
# Two threads read a few batches ahead: a batch is one element, gathered in one call.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def _index_batches(source, batch_size, read, *, seed, process_index, process_count):
  """Global batch b of epoch e is rows order_e[b·B, (b+1)·B) of a seeded permutation per epoch
  (the last N mod B rows of each epoch's order wait for a later epoch); this process reads its
  slice with `read(indices)`. One grain element per batch: a per-row shuffled index stream
  (grain's MapDataset.shuffle) costs a Python call per row, which at the main job's shape took
  more host time than the step."""
  local = local_batch_size(batch_size, process_count, len(source))
  n, per_epoch = len(source), len(source) // batch_size

  # Two epochs cached (prefetching threads may straddle a boundary); lru_cache is thread-safe.
  @functools.lru_cache(maxsize=2)
  def order(epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)

  def batch(index: int):
    epoch, b = divmod(int(index), per_epoch)
    start = b * batch_size + process_index * local
    return read(order(epoch)[start : start + local])

  dataset = grain.MapDataset.range(_EPOCHS * per_epoch).map(batch)
  return iter(dataset.to_iter_dataset(_READ_OPTIONS))
