"""The pruning study: every (model, task) pair of a config pruned to its smallest circuit, each
real task beside its nonsense control, circuits written as JSON as they finish (a rerun skips
the ones already on disk).

Config fields (see experiments/configs/prune.py): models, model_dir, tasks, controls,
n_train_pairs, n_heldout_pairs, max_len, seed, mean_windows, mean_seq_len, deadline_s, prune.*.
"""

from __future__ import annotations

import json
import pathlib
import time

import ml_collections
import numpy as np

from jaxsae import config_check
from jaxsae.errors import ConfigError
from jaxsae.models import pretrained, weights
from jaxsae.run_log import RunLog
from jaxsae.sparse import nodes, views
from jaxsae.sparse.prune import PruneConfig, prune
from jaxsae.sparse.pruned_circuit import Circuit
from jaxsae.sparse.task_suite import NONSENSE_SUFFIX, TASK_NAMES, build_suite
from jaxsae.text import model_corpus
from jaxsae.text.pipeline import load_split


def split_names(value: str | tuple | list) -> list[str]:
  """ "a,b" or ("a", "b") -> ["a", "b"]."""
  if isinstance(value, str):
    return [v.strip() for v in value.split(",") if v.strip()]
  return [str(v) for v in value]


def load_model(name: str, model_dir: str = ""):
  """A shipped model name, a folder, or a folder name under `model_dir`."""
  if model_dir and (pathlib.Path(model_dir) / name).is_dir():
    return pretrained.load(pathlib.Path(model_dir) / name)
  return pretrained.load(name)


def hidden_density(lm) -> float:
  """Share of nonzero weights over every attention and MLP matrix (the gate's included)."""
  nonzero = total = 0
  for layer in range(lm.config.n_layers):
    for kernel in weights.layer_weights(lm.params, layer).kernels().values():
      w = np.asarray(kernel)
      nonzero += int(np.count_nonzero(w))
      total += w.size
  return nonzero / total


def pretraining_windows(lm, corpus, n: int, seq_len: int) -> np.ndarray:
  """n windows of seq_len tokens spread evenly over the training split."""
  split = load_split(corpus, "train", lm.tokenizer, seq_len)
  index = np.linspace(0, len(split.windows) - 1, n).astype(int)
  return np.stack([split.windows[i][:seq_len] for i in index])


def prune_config(section: ml_collections.ConfigDict) -> PruneConfig:
  return PruneConfig(**section.to_dict())


def task_order(tasks: list[str], controls: bool) -> list[str]:
  """Each task followed by its control, so a deadline never leaves a task without one."""
  return [n for t in tasks for n in ([t, t + NONSENSE_SUFFIX] if controls else [t])]


POSITIVE = ("n_train_pairs", "n_heldout_pairs", "max_len", "mean_windows", "mean_seq_len")


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every invalid field of a pruning config (experiments/configs/prune.py), with its fix."""
  p: list[str] = []
  for name in POSITIVE + ("view_windows", "view_contexts"):
    value = config.get(name)
    config_check.require(
      isinstance(value, int) and value >= (1 if name in POSITIVE else 0),
      p,
      f"{name}={value!r} must be an int >= {1 if name in POSITIVE else 0}",
    )
  config_check.require(config.deadline_s >= 0, p, "deadline_s must be >= 0 (0: no deadline)")
  config_check.require(bool(split_names(config.models)), p, "models is empty; name at least one")
  tasks = split_names(config.tasks)
  config_check.require(bool(tasks), p, f"tasks is empty; use some of {list(TASK_NAMES)}")
  for task in tasks:
    config_check.require_choice(task, TASK_NAMES, "tasks", p)
  for spec in split_names(config.views) + split_names(config.published_circuits):
    model, _, task = spec.partition("/")
    if not model or task.removesuffix(NONSENSE_SUFFIX) not in TASK_NAMES:
      p.append(f'"{spec}" in views/published_circuits must read "<model>/<task>" with a known task')
  for pair in config.matched:
    config_check.require(
      len(pair) == 2, p, f"matched entry {pair!r} must be a (sparse, dense) pair of model names"
    )
  try:
    prune_config(config.prune)
  except (ConfigError, TypeError) as e:
    p.extend(getattr(e, "problems", [f"prune: {e}"]))
  return p


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[pathlib.Path]:
  """Prune every model on every task; returns the circuit files (new and already present)."""
  found = problems(config)
  if found:  # Before any model is loaded or any text read.
    raise ConfigError(found)
  workdir = pathlib.Path(workdir)
  start = time.monotonic()
  names = split_names(config.tasks)
  order = task_order(names, config.controls)
  documents = {}  # Split fractions -> (train, validation) documents, read once per split.
  written = []
  for model_name in split_names(config.models):
    lm = load_model(model_name, config.model_dir)
    corpus = model_corpus.for_model(lm, {"corpus": config.corpus})  # Held out from this model.
    fractions = (corpus.validation_fraction, corpus.test_fraction)
    if fractions not in documents:
      documents[fractions] = corpus.read("train"), corpus.read("validation")
    train_docs, heldout_docs = documents[fractions]
    train = build_suite(
      train_docs, lm.tokenizer, config.n_train_pairs, config.max_len, config.seed, True, names
    )
    heldout = build_suite(
      heldout_docs, lm.tokenizer, config.n_heldout_pairs, config.max_len, config.seed, True, names
    )
    width = max(t.max_prompt_len() for t in [*train.values(), *heldout.values()])
    width = -(-width // 32) * 32  # one compiled shape for every task of this model
    means = None
    out_dir = workdir / "circuits" / model_name
    for task_name in order:
      path = out_dir / f"{task_name}.json"
      if path.exists():
        written.append(path)
        continue
      if config.deadline_s and time.monotonic() - start > config.deadline_s:
        print(f"deadline: skipped {model_name}/{task_name}")
        continue
      if means is None:
        windows = pretraining_windows(lm, corpus, config.mean_windows, config.mean_seq_len)
        means = nodes.node_means(lm, windows)
      with RunLog(workdir / "logs" / model_name / task_name, tensorboard=False) as log:
        circuit = prune(
          lm,
          train[task_name],
          means,
          train[task_name].batch(width),
          heldout[task_name].batch(width),
          prune_config(config.prune),
          model_name,
          log=lambda r: log.write(r["step"], r),
        )
      metrics = dict(circuit.metrics)
      metrics.update(
        pretrain_loss=lm.metadata.get("test_report", {}).get("model", {}).get("loss"),
        hidden_density=hidden_density(lm),
        control_of=train[task_name].control_of,
      )
      circuit = Circuit(circuit.task, model_name, circuit.kept, circuit.scores, metrics)
      written.append(circuit.save(path))
      summary = {k: metrics[k] for k in ("nodes", "reached_target")}
      print(f"{model_name}/{task_name}: {json.dumps(summary)}, edges {metrics['edges']['total']}")
  return written


def write_views(
  config: ml_collections.ConfigDict, workdir: str | pathlib.Path
) -> list[pathlib.Path]:
  """views/<model>_<task>.json and .html (`jaxsae.sparse.views`) for every "model/task" of
  config.views whose circuit exists, with each node's top contexts on validation windows."""
  workdir, written = pathlib.Path(workdir), []
  for spec in split_names(config.views):
    model_name, task_name = spec.split("/")
    path = workdir / "circuits" / model_name / f"{task_name}.json"
    if not path.exists():
      print(f"views: no circuit {path}; skipped")
      continue
    lm = load_model(model_name, config.model_dir)
    circuit = Circuit.load(path)
    windows = model_corpus.corpus_windows(lm, config.view_windows, config.mean_seq_len)
    contexts = views.node_contexts(lm, circuit, windows, top=config.view_contexts)
    doc = views.circuit_document(lm, circuit, contexts)
    stem = workdir / "views" / f"{model_name}_{task_name}"
    written += [views.write_json(stem.with_suffix(".json"), doc)]
    written += [views.write_html(stem.with_suffix(".html"), doc)]
  return written
