"""Turn a training workdir into a saved model folder (weights, config, tokenizer, figures)."""

from __future__ import annotations

import json
import pathlib
import platform
import sys

import jax
import ml_collections

from jaxsae import sharding
from jaxsae.checkpoint import Checkpointer
from jaxsae.errors import CheckpointError
from jaxsae.lm import report as report_lib
from jaxsae.lm import train
from jaxsae.models import pretrained
from jaxsae.models.config import TransformerConfig
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer
from jaxsae.text import corpus as corpus_lib
from jaxsae.text.tokenizer import load_tokenizer


def load_run_config(workdir: pathlib.Path) -> tuple[ml_collections.ConfigDict, TransformerConfig]:
  """The LM config and model config a workdir was trained with."""
  try:
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    model_config = TransformerConfig.from_dict(json.loads((workdir / "model.json").read_text()))
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(
      f"{workdir} is not an LM training workdir (config.json / model.json unreadable: {e}); "
      "pass the --workdir given to experiments.train_lm"
    ) from e
  return config, model_config


def restore_params(workdir: str | pathlib.Path, step: int | None = None):
  """(config, model config, params, step) from a workdir's latest (or given) checkpoint."""
  workdir = pathlib.Path(workdir)
  config, model_config = load_run_config(workdir)
  model = Transformer(model_config)
  mesh = sharding.make_mesh()
  # The optimizer fixes the checkpoint's state structure (weight-sparse runs use their own).
  optimizer = train.make_optimizer(config.optim, config.train.steps, config.get("sparsity"))
  abstract_state, shardings = train.state_shardings(model, optimizer, mesh)
  with Checkpointer(workdir / "checkpoints", save_every=1) as checkpointer:
    step = checkpointer.latest_step() if step is None else step
    state, meta = checkpointer.restore(
      sharding.with_shardings(abstract_state, shardings), step=step
    )
  return config, model_config, jax.device_get(state.params), step, meta


def export(workdir: str | pathlib.Path, out: str | pathlib.Path, step: int | None = None) -> dict:
  """Save the workdir's model to `out` with its test-split report in the metadata."""
  config, model_config, params, step, meta = restore_params(workdir, step)
  tokenizer = load_tokenizer(config.data.tokenizer)
  lm = LanguageModel(model_config, params, tokenizer)
  corpus = corpus_lib.from_config(config.data)
  report = report_lib.split_report(lm, corpus, "test", seq_len=config.data.seq_len)
  metadata = {
    "step": step,
    "train_tokens": meta.get("tokens"),
    "corpus": config.data.corpus,
    "pattern": config.data.pattern,
    "validation_fraction": config.data.validation_fraction,
    "test_fraction": config.data.test_fraction,
    **corpus_lib.dataset_fields(config.data),  # So reports rebuild the same dataset splits.
    "seq_len": config.data.seq_len,
    "test_report": report,
    "trained_on": f"Python {platform.python_version()} stdlib, jax {jax.__version__}",
    "argv": sys.argv,
  }
  pretrained.save(out, model_config, params, tokenizer, metadata)
  return metadata
