"""The SAE experiment behind `experiments/train_sae.py`: train every SAE a config describes,
evaluate each on held-out activations, export each, and tabulate.

Leaves in the workdir: checkpoints/, metrics.jsonl, tensorboard/, config.json, saes.json,
saes/<label>/ (exported SAEs acting on raw activations), results.md and results.csv.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections

from jaxsae import sharding, tables
from jaxsae.sae import evaluate, experiment_data, export, synthetic
from jaxsae.sae import train as train_lib

COLUMNS = ("sae", "l0", "fvu", "dead_fraction", "recovered@0.9", "train_fvu")


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Train (or resume), evaluate and export; returns one result row per SAE."""
  workdir = pathlib.Path(workdir)
  sharding.initialize_distributed(config.mesh.distributed)  # Before anything touches JAX.
  train_source, held_out = experiment_data.open_source(config.data)
  result = train_lib.train(config, workdir, train_source)
  truth = None
  if config.data.source == "synthetic":
    truth = experiment_data.synthetic_features(config.data).directions()
  final = result.history[-1] if result.history else {}
  rows = []
  for group in result.groups:
    for index, label in enumerate(group.labels):
      variables = result.member_variables(group.name, index)
      member_config = group.member_config(index)
      metrics = evaluate.reconstruction_metrics(
        member_config, variables, result.scale, held_out, target_scale=result.target_scale
      )
      row = {"sae": label or group.name, **metrics}
      prefix = f"{label}/" if f"{label}/fvu" in final else ""
      row["train_fvu"] = final.get(f"{prefix}fvu", float("nan"))
      if truth is not None:
        row["recovered@0.9"] = synthetic.recovered_fraction(truth, variables["params"]["W_dec"])
      rows.append(row)
      if jax.process_index() == 0:
        export.save(
          workdir / "saes" / (label or group.name),
          member_config,
          variables,
          result.scale,
          {"steps": int(result.state.step), "metrics": metrics},
          target_scale=result.target_scale,
        )
  if jax.process_index() == 0:
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    (workdir / "results.md").write_text(tables.markdown(rows, columns) + "\n")
    tables.write_csv(workdir / "results.csv", rows, columns)
  return rows
