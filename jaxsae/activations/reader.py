"""Shuffled, deterministic, checkpointable batches of stored activations.

Random rows are never gathered from disk. Each epoch orders the store's chunks by a seeded
permutation and splits them into groups of `shuffle_chunks` chunks; a group is read whole and
its rows are permuted in memory (the shuffle buffer). Batch b of the epoch is rows
[b·B, (b+1)·B) of that order, so every row appears exactly once per epoch (the last partial
batch of an epoch is dropped). The dataset is a grain MapDataset over the global batch index,
so its iterator state is one integer, saved with the train state; process p of n reads its
slice of each global batch. One background thread reads a few batches ahead, in order.

A transcoder's (input, target) pairs are two hooks of one store, or hooks of two stores
harvested from the same windows (same rows, same chunks): `paired_batches` reads both in the
same order, so row i of a batch's inputs and of its targets is the same token.
"""

from __future__ import annotations

import threading

import grain
import numpy as np

from jaxsae.activations.store import ActivationStore
from jaxsae.errors import JaxsaeError
from jaxsae.sae.row_sources import local_batch_size

_EPOCHS = 1 << 40  # "Forever": grain datasets are lazy, so this costs nothing.
# One background thread reads a few batches ahead, in order, so each chunk group is read once
# per epoch. (grain's default, 16 threads and 500 batches ahead, read every chunk ~15 times
# over, racing on the group cache, and could hold gigabytes of batches.)
READ_OPTIONS = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)


class StoreSource:
  """One hook of a complete store, as an SAE trainer's activation source."""

  def __init__(self, store: ActivationStore | str, hook: str, shuffle_chunks: int = 8):
    self.store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    self.store.require_complete()
    self.hook = self.store.check_hook(hook)
    self.d_in = self.store.width(hook)
    self.shuffle_chunks = shuffle_chunks

  def __len__(self) -> int:
    return self.store.n_rows

  def rows(self, indices: np.ndarray) -> np.ndarray:
    return self.store.gather(self.hook, indices)

  def train_batches(
    self, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1
  ) -> grain.DatasetIterator:
    order = EpochOrder(self.store, self.hook, seed, self.shuffle_chunks)
    return self._batches(batch_size, order.rows, process_index, process_count)

  def paired_batches(
    self,
    targets: StoreSource,
    batch_size: int,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ) -> grain.DatasetIterator:
    """Batches of (this hook's rows, `targets`' rows of the same tokens), in one order."""
    if not isinstance(targets, StoreSource):
      raise JaxsaeError(
        f"a store's inputs pair with another store hook's targets, not {type(targets).__name__}"
      )
    problem = alignment_problem(self.store, targets.store)
    if problem:
      raise JaxsaeError(
        f"{self.hook} of {self.store.directory} and {targets.hook} of "
        f"{targets.store.directory} are not the same tokens ({problem}); harvest both hooks "
        "in one pass, or from the same windows with the same settings"
      )
    inputs = EpochOrder(self.store, self.hook, seed, self.shuffle_chunks)
    outputs = EpochOrder(targets.store, targets.hook, seed, self.shuffle_chunks)

    def both(epoch: int, start: int, stop: int):
      return inputs.rows(epoch, start, stop), outputs.rows(epoch, start, stop)

    return self._batches(batch_size, both, process_index, process_count)

  def _batches(self, batch_size, read, process_index, process_count) -> grain.DatasetIterator:
    """Global batch b is rows [b·B, (b+1)·B) of its epoch's order; this process reads its slice
    with `read(epoch, start, stop)`."""
    local = local_batch_size(
      batch_size,
      process_count,
      len(self),
      holder=f"the store at {self.store.directory}",
      fix="harvest more or lower train.batch_size",
    )
    per_epoch = len(self) // batch_size

    def batch(index: int):
      epoch, b = divmod(int(index), per_epoch)
      start = b * batch_size + process_index * local
      return read(epoch, start, start + local)

    dataset = grain.MapDataset.range(_EPOCHS * per_epoch).map(batch)
    return iter(dataset.to_iter_dataset(READ_OPTIONS))


# Store metadata that decides which token each row is (jaxsae.activations.harvest's fingerprint).
_ROW_KEYS = ("n_rows", "chunk_rows", "windows_sha256", "skip_separator", "skip_first")


def alignment_problem(a: ActivationStore, b: ActivationStore) -> str | None:
  """Why rows of stores `a` and `b` may be different tokens, or None when they are the same:
  one store, or equal row counts, chunking and harvest fingerprints (stores without
  fingerprints: equal row tables)."""
  if a.directory.resolve() == b.directory.resolve():
    return None
  differ = [k for k in _ROW_KEYS if a.meta.get(k) != b.meta.get(k)]
  if differ:
    return "their " + ", ".join(differ) + " differ"
  if "windows_sha256" not in a.meta and not np.array_equal(a.rows_table(), b.rows_table()):
    return "their row tables differ"
  return None


class EpochOrder:
  """The row order of each epoch: shuffled chunk groups, rows permuted within a group."""

  def __init__(self, store: ActivationStore, hook: str, seed: int, shuffle_chunks: int):
    self.store, self.hook, self.seed = store, hook, seed
    self.group_chunks = max(1, shuffle_chunks)
    self._cache: dict[tuple[int, int], np.ndarray] = {}
    self._lock = threading.Lock()  # Readers on several threads read each group once.
    self._epoch_groups: tuple[int, tuple] | None = None

  def _groups(self, epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(chunk ids per group, first epoch position of each group), computed once per epoch."""
    if self._epoch_groups is None or self._epoch_groups[0] != epoch:
      self._epoch_groups = (epoch, self._make_groups(epoch))
    return self._epoch_groups[1]

  def _make_groups(self, epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.store.n_chunks)
    groups = [perm[i : i + self.group_chunks] for i in range(0, len(perm), self.group_chunks)]
    sizes = [sum(self._chunk_len(c) for c in g) for g in groups]
    return groups, np.concatenate([[0], np.cumsum(sizes)])

  def _chunk_len(self, chunk: int) -> int:
    start = chunk * self.store.chunk_rows
    return min(self.store.chunk_rows, self.store.n_rows - start)

  def _group_rows(self, epoch: int, index: int, chunks: np.ndarray) -> np.ndarray:
    key = (epoch, index)
    with self._lock:
      if key not in self._cache:
        block = np.concatenate([self.store.read_chunk(self.hook, int(c)) for c in chunks])
        perm = np.random.default_rng([self.seed, epoch, index, 1]).permutation(len(block))
        if len(self._cache) >= 2:  # A batch spans at most two groups.
          self._cache.pop(next(iter(self._cache)))
        self._cache[key] = block[perm]
      return self._cache[key]

  def rows(self, epoch: int, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of epoch `epoch`'s order."""
    groups, offsets = self._groups(epoch)
    out = []
    g = int(np.searchsorted(offsets, start, side="right")) - 1
    while start < stop:
      block = self._group_rows(epoch, g, groups[g])
      lo = start - offsets[g]
      take = min(stop - start, len(block) - lo)
      out.append(block[lo : lo + take])
      start += take
      g += 1
    return np.concatenate(out)
