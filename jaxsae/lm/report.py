"""A model's held-out loss beside unigram and bigram baselines, on the same target tokens."""

from __future__ import annotations

import jax
import numpy as np

from jaxsae import sharding
from jaxsae.lm import evaluate as eval_lib
from jaxsae.lm.baselines import NGramBaselines
from jaxsae.models.language_model import LanguageModel
from jaxsae.text import pipeline
from jaxsae.text.corpus import Corpus


def evaluate_model(
  lm: LanguageModel,
  windows: pipeline.PackedWindows,
  *,
  batch_size: int | None = None,
  max_sequences: int | None = None,
  mesh=None,
) -> eval_lib.LMEval:
  """Mean loss and bits per byte of `lm` over the first `max_sequences` windows (all if None)."""
  mesh = mesh or sharding.make_mesh()
  batch_size = batch_size or 8 * mesh.shape[sharding.DATA]
  step = jax.jit(eval_lib.make_eval_step(lm.module, lm.tokenizer.token_byte_lengths()))
  params = jax.device_put(lm.params, sharding.replicated(mesh))
  return eval_lib.evaluate(step, params, windows, batch_size, mesh, max_sequences)


def split_report(
  lm: LanguageModel,
  corpus: Corpus,
  split: str = "test",
  *,
  seq_len: int | None = None,
  max_sequences: int | None = None,
  mesh=None,
) -> dict:
  """{"model", "unigram", "bigram": {"loss" (nats/token), "bits_per_byte"}, "tokens", ...}.

  Baselines are fitted on the train split (the bigram's interpolation weight on validation)
  and scored on exactly the target tokens the model is scored on.
  """
  seq_len = seq_len or lm.config.max_len
  held_out = pipeline.load_split(corpus, split, lm.tokenizer, seq_len)
  n_windows = (
    len(held_out.windows) if max_sequences is None else min(max_sequences, len(held_out.windows))
  )
  model = evaluate_model(lm, held_out.windows, max_sequences=n_windows, mesh=mesh)

  baselines = NGramBaselines(
    pipeline.load_split(corpus, "train", lm.tokenizer, seq_len).stream, lm.config.vocab_size
  )
  baselines.fit_lambda(pipeline.load_split(corpus, "validation", lm.tokenizer, seq_len).stream)
  scored = np.asarray(held_out.stream[: n_windows * seq_len + 1])
  base = baselines.evaluate(scored, lm.tokenizer.token_byte_lengths())
  report = {"split": split, "tokens": model.tokens, "seq_len": seq_len}
  report["model"] = {"loss": model.loss, "bits_per_byte": model.bits_per_byte}
  for name, result in base.items():
    report[name] = {"loss": result.loss, "bits_per_byte": result.bits_per_byte}
  report["bigram_lambda"] = baselines.bigram_lambda
  return report


def report_rows(report: dict) -> list[dict]:
  """Rows for `tables.markdown`: one per model/baseline."""
  return [
    {
      "model": name,
      "loss (nats/token)": report[name]["loss"],
      "bits/byte": report[name]["bits_per_byte"],
    }
    for name in ("model", "bigram", "unigram")
  ]
