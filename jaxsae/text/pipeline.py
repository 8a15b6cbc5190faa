"""grain pipelines that pack documents into fixed-length sequences for language modelling.

Documents are joined into one token stream, each preceded by the separator:
`[sep] doc0 [sep] doc1 ...`, and cut into windows of `seq_len + 1` tokens with stride
`seq_len`, so every token is a target exactly once per epoch (inputs are `[:-1]`, targets
`[1:]`). Pre-tokenized dataset documents (`hf_datasets`) are joined the same way, untokenized.
Training shuffles windows with a seed (a new permutation each epoch), repeats, takes every
`process_count`-th window for this process and batches; its iterator state is one index and
checkpoints through Orbax. Evaluation reads windows in order and pads the last batch,
marking padded rows with weight 0.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from jaxsae.errors import CorpusError, JaxsaeError
from jaxsae.text.corpus import Corpus
from jaxsae.text.hf_datasets import DatasetCorpus
from jaxsae.text.tokenizer import Tokenizer


def token_stream(docs: list[bytes], tokenizer: Tokenizer) -> np.ndarray:
  """Concatenate documents, each preceded by the separator, into one 1-D token array."""
  sep = np.asarray([tokenizer.separator_id], np.int32)
  parts = []
  for ids in tokenizer.encode_many(docs):
    parts += [sep, ids]
  stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
  return stream.astype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32)


def id_stream(
  docs: list[np.ndarray], separator_id: int, vocab_size: int, column: str
) -> np.ndarray:
  """`token_stream` for pre-tokenized documents: `[sep] ids0 [sep] ids1 ...`, ids as given.

  Raises CorpusError, naming `column`, when an id is negative or not below `vocab_size`."""
  ids = np.concatenate(docs) if docs else np.zeros(0, np.int64)
  low, high = (int(ids.min()), int(ids.max())) if len(ids) else (0, 0)
  if low < 0 or high >= vocab_size:
    raise CorpusError(
      f'the token-id column "{column}" holds ids from {low} to {high}, outside the model\'s '
      f"vocabulary of {vocab_size} ids (0 to {vocab_size - 1}); use ids made by the model's "
      "tokenizer, or a model with a larger model.vocab_size"
    )
  sep = np.asarray([separator_id], np.int64)
  stream = np.concatenate([x for d in docs for x in (sep, d)]) if docs else ids
  return stream.astype(np.uint16 if vocab_size <= 2**16 else np.int32)


class PackedWindows:
  """A grain source: window i is `stream[i*seq_len : i*seq_len + seq_len + 1]` as int32."""

  def __init__(self, stream: np.ndarray, seq_len: int):
    if seq_len < 2:
      raise JaxsaeError(f"seq_len={seq_len} is below 2; next-token prediction needs at least 2")
    if len(stream) < seq_len + 1:
      raise CorpusError(
        f"the token stream has {len(stream)} tokens, fewer than one sequence of seq_len+1 = "
        f"{seq_len + 1}; use a larger corpus split or a shorter data.seq_len"
      )
    self.stream, self.seq_len = stream, seq_len

  def __len__(self) -> int:
    return (len(self.stream) - 1) // self.seq_len

  def __getitem__(self, index: int) -> np.ndarray:
    if not 0 <= index < len(self):
      raise IndexError(index)
    start = index * self.seq_len
    return self.stream[start : start + self.seq_len + 1].astype(np.int32)


class BOSWindows:
  """Windows of `inner` with `bos_id` put in front (seq_len one more), for models trained to
  see a BOS first (Gemma: without it the loss nearly doubles). The BOS is never a target."""

  def __init__(self, inner: PackedWindows, bos_id: int):
    self.inner, self.bos_id, self.seq_len = inner, int(bos_id), inner.seq_len + 1

  def __len__(self) -> int:
    return len(self.inner)

  def __getitem__(self, index: int) -> np.ndarray:
    return np.concatenate([[self.bos_id], self.inner[index]]).astype(np.int32)


def load_windows(
  corpus: Corpus | DatasetCorpus,
  split: str,
  tokenizer: Tokenizer,
  seq_len: int,
  bos: bool = False,
  vocab_size: int | None = None,
) -> PackedWindows | BOSWindows:
  """One split's windows of `seq_len` inputs (+1 target); with `bos`, the first input of each
  is the separator (the model's BOS) and seq_len - 1 come from the corpus. `vocab_size`: as
  for `load_split`."""
  if not bos:
    return load_split(corpus, split, tokenizer, seq_len, vocab_size).windows
  return BOSWindows(
    load_split(corpus, split, tokenizer, seq_len - 1, vocab_size).windows, tokenizer.separator_id
  )


def _per_process(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise JaxsaeError(
      f"batch size {batch_size} is not divisible by the {process_count} processes; "
      f"use a multiple of {process_count}"
    )
  return batch_size // process_count


def train_batches(
  windows: PackedWindows,
  batch_size: int,
  *,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.DatasetIterator:
  """An endless, shuffled, checkpointable iterator of this process's share of each global batch.

  Yields {"tokens": (batch_size // process_count, seq_len + 1) int32, "weights": ones}.
  """
  local = _per_process(batch_size, process_count)
  ds = grain.MapDataset.source(windows).shuffle(seed=seed).repeat()
  ds = ds[process_index::process_count].batch(local, drop_remainder=True)
  ds = ds.map(lambda t: {"tokens": t, "weights": np.ones(t.shape[0], np.float32)})
  return iter(ds.to_iter_dataset())


def eval_batches(
  windows: PackedWindows,
  batch_size: int,
  *,
  max_sequences: int | None = None,
  process_index: int = 0,
  process_count: int = 1,
):
  """In-order batches over the first `max_sequences` windows (all if None), last one padded.

  Padded rows have weight 0. Every process yields the same number of batches.
  """
  local = _per_process(batch_size, process_count)
  n = len(windows) if max_sequences is None else min(max_sequences, len(windows))
  for start in range(0, n, batch_size):
    rows = range(start + process_index * local, min(start + (process_index + 1) * local, n))
    tokens = np.zeros((local, windows.seq_len + 1), np.int32)
    weights = np.zeros(local, np.float32)
    for j, i in enumerate(rows):
      tokens[j], weights[j] = windows[i], 1.0
    yield {"tokens": tokens, "weights": weights}


def sample_windows(windows: PackedWindows, n: int, seed: int, split: str) -> np.ndarray:
  """(min(n, len), seq_len + 1) int32: windows drawn without replacement by (seed, split), in
  corpus order."""
  rng = np.random.default_rng([seed, len(split)])
  chosen = np.sort(rng.choice(len(windows), size=min(n, len(windows)), replace=False))
  return np.stack([windows[int(i)] for i in chosen])


@dataclasses.dataclass
class SplitData:
  """One split of a corpus, tokenized and packed; holds the stream for baselines and metrics."""

  stream: np.ndarray
  windows: PackedWindows
  n_documents: int
  n_bytes: int  # Pre-tokenized: the tokens' byte lengths (0 when ids pass the tokenizer's).


def load_split(
  corpus: Corpus | DatasetCorpus,
  split: str,
  tokenizer: Tokenizer,
  seq_len: int,
  vocab_size: int | None = None,
) -> SplitData:
  """Read, tokenize and pack one split. A pre-tokenized dataset's ids are packed as they are,
  checked against `vocab_size` (the model's; default the tokenizer's)."""
  if getattr(corpus, "pretokenized", False):
    ids = corpus.read_ids(split)
    vocab_size = vocab_size or tokenizer.vocab_size
    stream = id_stream(ids, tokenizer.separator_id, vocab_size, corpus.input_ids_column)
    lengths, flat = np.asarray(tokenizer.token_byte_lengths()), np.concatenate(ids)
    n_bytes = int(lengths[flat].sum()) if flat.max() < len(lengths) else 0
    return SplitData(stream, PackedWindows(stream, seq_len), len(ids), n_bytes)
  docs = corpus.read(split)
  stream = token_stream(docs, tokenizer)
  return SplitData(stream, PackedWindows(stream, seq_len), len(docs), sum(len(d) for d in docs))
