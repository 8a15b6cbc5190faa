"""The corpus a model was trained on and its split (jaxsae.text.model_corpus)."""

import warnings

import jax
import numpy as np
import pytest

from conftest import tiny_circuit_config
from jaxsae import main_job
from jaxsae.bench import throughput
from jaxsae.errors import CorpusError
from jaxsae.models import pretrained
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import model_corpus
from jaxsae.text.tokenizer import ByteTokenizer

MODEL_FRACTIONS = (0.01, 0.01)  # Not the defaults: held out are the files hashed below 0.02.


def _tiny_model(meta=None) -> LanguageModel:
  config = tiny_circuit_config()
  params = T.init_params(T.Transformer(config), jax.random.key(0))
  return LanguageModel(config, params, ByteTokenizer(), meta or {})


def test_corpus_windows_packs_a_split(tmp_path):
  for i in range(12):
    (tmp_path / f"f{i}.txt").write_text(f"document {i} " * 20)
  meta = {"corpus": str(tmp_path), "pattern": "*.txt", "seq_len": 16}
  w = model_corpus.corpus_windows(_tiny_model(meta), n=5, split="train")
  assert w.shape == (5, 16) and w.dtype == np.int32 and w.max() <= 256


def test_split_fractions_are_the_models_own_else_the_defaults():
  recorded = model_corpus.split_fractions(
    _tiny_model({"validation_fraction": 0.1, "test_fraction": 0.05})
  )
  assert (recorded.validation, recorded.test, recorded.recorded) == (0.1, 0.05, True)
  default = model_corpus.split_fractions(_tiny_model())  # E.g. a Hugging Face model.
  assert (default.validation, default.test) == (
    corpus_lib.VALIDATION_FRACTION,
    corpus_lib.TEST_FRACTION,
  )
  assert not default.recorded
  with pytest.raises(CorpusError, match="test_fraction"):
    model_corpus.split_fractions(_tiny_model({"validation_fraction": 0.1}))


def _names(model_split: str, default_split: str, count: int) -> list[str]:
  """File names in `model_split` under MODEL_FRACTIONS and `default_split` under the defaults
  (the model's validation files are test files under the defaults: u in [0.01, 0.02))."""
  defaults = corpus_lib.VALIDATION_FRACTION, corpus_lib.TEST_FRACTION
  found = []
  for name in (f"doc{i}.txt" for i in range(100_000)):  # Bounded: a wrong pair fails, not hangs.
    split = corpus_lib.split_of(name, *MODEL_FRACTIONS), corpus_lib.split_of(name, *defaults)
    if split == (model_split, default_split):
      found.append(name)
      if len(found) == count:
        return found
  raise AssertionError(f"no {count} files in {model_split} and, by default, {default_split}")


def test_the_main_job_holds_out_the_models_own_validation_files(tmp_path):
  """A model saved with other split fractions is measured on its own validation files, never on
  the training files that the default fractions would have held out."""
  held_out = _names("validation", "test", 2)
  trained_on_but_default_held_out = _names("train", "validation", 2)
  trained_on = trained_on_but_default_held_out + _names("train", "train", 3)
  letters = {}  # Each file is one letter repeated: a window's bytes name its files.
  for i, name in enumerate(held_out + trained_on):
    letters[name] = ord("A") + i
    (tmp_path / name).write_text(chr(letters[name]) * 300)
  meta = {"corpus": str(tmp_path), "pattern": "*.txt"}
  meta.update(validation_fraction=MODEL_FRACTIONS[0], test_fraction=MODEL_FRACTIONS[1])
  model = _tiny_model(meta)
  folder = pretrained.save(tmp_path / "model", model.config, model.params, model.tokenizer, meta)

  config = main_job.base_config()
  config.harvest.update(corpus=str(tmp_path), pattern="*.txt", hook="blocks.0.resid_post")
  config.harvest.update(seq_len=16, train_windows=8, eval_windows=6, batch_size=4, chunk_rows=64)
  harvested = main_job.harvest_stores(config, pretrained.load(folder), tmp_path / "work")

  def letters_in(windows):
    return set(np.unique(windows).tolist()) - {ByteTokenizer().separator_id}

  assert letters_in(harvested.eval_windows) == {letters[n] for n in held_out}
  train_windows = harvested.train.store.windows()
  assert letters_in(train_windows) <= {letters[n] for n in trained_on}


def test_other_corpus_than_the_models_is_flagged_and_its_own_is_not(tmp_path):
  model = _tiny_model({"corpus": "stdlib", "pattern": "**/*.py"})
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # The model's own corpus (and an unrecorded one): silent.
    model_corpus.warn_if_other_corpus(model, {"corpus": "stdlib", "pattern": "**/*.py"})
    model_corpus.warn_if_other_corpus(_tiny_model(), {"corpus": str(tmp_path)})
  with pytest.warns(model_corpus.OtherCorpusWarning, match="corpus='stdlib'"):
    model_corpus.warn_if_other_corpus(model, {"corpus": str(tmp_path), "pattern": "*.txt"})


def test_throughput_windows_come_from_the_models_own_validation_files(tmp_path):
  held_out = _names("validation", "test", 2)
  trained_on = _names("train", "validation", 2) + _names("train", "train", 2)
  for i, name in enumerate(held_out + trained_on):
    (tmp_path / name).write_text(chr(ord("A") + i) * 300)
  meta = {"corpus": str(tmp_path), "pattern": "*.txt"}
  meta.update(validation_fraction=MODEL_FRACTIONS[0], test_fraction=MODEL_FRACTIONS[1])
  model = _tiny_model(meta)
  corpus = model_corpus.for_model(model)
  windows = throughput.corpus_windows(corpus, model.tokenizer, 16, 4, "validation")
  letters = set(np.unique(windows).tolist()) - {ByteTokenizer().separator_id}
  assert letters == {ord("A"), ord("B")}  # The two held-out files, and nothing trained on.
