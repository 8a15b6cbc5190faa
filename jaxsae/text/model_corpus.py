"""The corpus a model was trained on and its train/validation/test split, read from the model's
metadata: the one place splits are derived for an existing model, so that nothing measures a
model on files it was trained on. `jaxsae.lm.export` records them (corpus, pattern,
validation_fraction, test_fraction and the dataset fields); a model that records none (Hugging
Face, GGUF and Hub models, trained elsewhere) takes `corpus.VALIDATION_FRACTION` and
`corpus.TEST_FRACTION`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import numpy as np

from jaxsae.errors import CorpusError
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline


@dataclasses.dataclass(frozen=True)
class SplitFractions:
  """The shares held out for validation and test; `recorded` is False where the model records
  none and the defaults stand in."""

  validation: float
  test: float
  recorded: bool


def split_fractions(lm) -> SplitFractions:
  """The validation and test shares `lm` was trained with (its metadata), else the defaults."""
  meta = lm.metadata or {}
  missing = [k for k in ("validation_fraction", "test_fraction") if k not in meta]
  if len(missing) == 1:  # Half a record would split by a share the model never used.
    raise CorpusError(
      f"the model's metadata records one split fraction but not {missing[0]}; re-export it "
      "with jaxsae.lm.export, which records both"
    )
  if missing:
    return SplitFractions(corpus_lib.VALIDATION_FRACTION, corpus_lib.TEST_FRACTION, False)
  return SplitFractions(float(meta["validation_fraction"]), float(meta["test_fraction"]), True)


def for_model(lm, section: Mapping | None = None):
  """A `Corpus` (or `hf_datasets.DatasetCorpus`) split as `lm` was trained: the corpus a config
  section names (harvest.*: corpus, pattern, dataset fields), or, with None, the corpus recorded
  with the model (else the standard library)."""
  named = (lm.metadata or {}) if section is None else section
  fractions = split_fractions(lm)
  return corpus_lib.from_config(named, fractions.validation, fractions.test)


class OtherCorpusWarning(UserWarning):
  """Activations are taken from a corpus other than the one the model records training on."""


def warn_if_other_corpus(lm, section: Mapping) -> None:
  """Warn when a config section (harvest.*) names a corpus or pattern other than the one `lm`
  records: legitimate (an SAE for other text), but that corpus's held-out split is not held out
  from the model's training data."""
  meta = lm.metadata or {}
  if "corpus" not in meta:  # Trained elsewhere (Hugging Face, GGUF): nothing to compare.
    return

  def corpus_and_pattern(fields: Mapping) -> list[str]:
    return [str(fields.get("corpus", corpus_lib.STDLIB)), str(fields.get("pattern", "**/*.py"))]

  named, recorded = corpus_and_pattern(section), corpus_and_pattern(meta)
  if named != recorded:
    warnings.warn(
      f"the model was trained on corpus {recorded[0]!r} (pattern {recorded[1]!r}) but the config "
      f"names {named[0]!r} ({named[1]!r}): its validation files are held out from that corpus, "
      "not from the model's training data. For the model's own held-out files set "
      f"corpus={recorded[0]!r} and pattern={recorded[1]!r}.",
      OtherCorpusWarning,
      stacklevel=2,
    )


def corpus_windows(
  lm, n: int = 128, seq_len: int | None = None, split: str = "validation", seed=0
) -> np.ndarray:
  """(n, seq_len) int32 token windows drawn (sorted) from a split of the corpus the model was
  trained on (its metadata; else the standard library), packed as in training."""
  meta = lm.metadata or {}
  seq_len = int(seq_len or min(lm.config.max_len, int(meta.get("seq_len", lm.config.max_len))))
  windows = pipeline.load_split(for_model(lm), split, lm.tokenizer, seq_len).windows
  return pipeline.sample_windows(windows, n, seed, split)[:, :seq_len]
