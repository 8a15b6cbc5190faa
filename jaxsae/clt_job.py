"""A cross-layer transcoder of every MLP of a model, trained streamed, and its replacement model
(with `clt.cross_layer=False`, per-layer transcoders of every MLP, trained the same way).

    model windows ─(one forward: every layer's mlp.in and mlp.out)→ CLT training (sae.layers = L)
      → circuit-tracer's CLT files → the replacement model on held-out windows
      → attribution graphs of a few prompts

No store of every layer is written: `StreamingSource` runs the model for each batch and yields
(inputs, targets) side by side. The config is the main job's (harvest, sae, train, optim, mesh)
with `clt`: the sites and the features per layer; `sae.n_latents` is set to L × that and
`sae.layers` to L. The CLT is JumpReLU or ReLU (circuit-tracer's CLT activations), with the
recipe of its architecture (`train_config.RECIPES`).
"""

from __future__ import annotations

import json
import pathlib
import time

import ml_collections
import numpy as np

from jaxsae import config_check, main_job, sharding, tables
from jaxsae.activations.streaming import StreamingSource
from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution import prune as prune_lib
from jaxsae.errors import ConfigError
from jaxsae.evals import replacement
from jaxsae.models import pretrained
from jaxsae.sae import cross_layer
from jaxsae.sae import train as train_lib
from jaxsae.sae.zoo import circuit_tracer


def base_config(architecture: str = "jumprelu") -> ml_collections.ConfigDict:
  c = main_job.base_config(architecture)
  c.harvest.streaming = True
  c.harvest.hook = "blocks.0.mlp.in"  # Unused: the sites are clt.input_site / output_site.
  c.clt = ml_collections.ConfigDict()
  c.clt.input_site = "mlp.in"  # Each layer's features read this site...
  c.clt.output_site = "mlp.out"  # ...and write this one at their layer and every later one.
  c.clt.features_per_layer = 512
  # False: per-layer transcoders of every layer instead (each feature writes its own layer),
  # trained together from the same forward passes and written as circuit-tracer's set.
  c.clt.cross_layer = True
  # Prompts whose attribution graphs are computed after training (text, next token attributed).
  c.clt.prompts = ("def f(x):\n    return x", "items = [[1, 2], [3, 4]", "name = 'abc")
  c.sae.k = 32  # The JumpReLU target: active features per token over every layer.
  return c


def _without_clt(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({k: v for k, v in config.items() if k != "clt"})


def validate(config: ml_collections.ConfigDict) -> None:
  main_job.validate(_without_clt(config))
  p = []
  arch = config.sae.architecture
  config_check.require(
    arch in ("jumprelu", "relu"),
    p,
    f"sae.architecture={arch!r}: circuit-tracer's CLTs are jumprelu or relu; choose one",
  )
  config_check.require(config.clt.features_per_layer >= 1, p, "clt.features_per_layer must be ≥ 1")
  if p:
    raise ConfigError(p)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  validate(config)
  sharding.initialize_distributed(config.mesh.distributed)
  workdir = pathlib.Path(workdir)
  h = config.harvest
  lm = pretrained.load(h.model)
  L = lm.config.n_layers
  ins = [f"blocks.{i}.{config.clt.input_site}" for i in range(L)]
  outs = [f"blocks.{i}.{config.clt.output_site}" for i in range(L)]
  windows = main_job.split_windows(config, lm)
  source = StreamingSource(
    lm,
    windows["train"][:, :-1],
    ins,
    target_hook=outs,
    skip_separator=h.skip_separator,
    skip_first=h.skip_first,
  )
  sae = main_job.sae_part(_without_clt(config))
  sae.sae.layers = L
  sae.sae.cross_layer = config.clt.cross_layer
  sae.sae.n_latents = L * config.clt.features_per_layer
  start = time.perf_counter()
  result = train_lib.train(sae, workdir / "train", source, progress_desc="train clt")
  train_s = time.perf_counter() - start
  group = result.groups[0]
  params = result.member_params(group.name)
  record = cross_layer.record(group.config, params, result.scale, result.target_scale, ins, outs)
  if config.clt.cross_layer:
    folder = circuit_tracer.write_clt(workdir / "clt", record, model_name=str(h.model))
  else:
    by_layer = dict(enumerate(record))
    folder = circuit_tracer.write_set(workdir / "transcoders", by_layer, model_name=str(h.model))
  report = replacement.evaluate(lm, record, windows["validation"], skip_first=h.skip_first)
  graphs = []
  for prompt in config.clt.prompts:
    tokens = np.asarray(lm.tokenizer.encode(prompt), np.int32)
    g = graph_lib.compute(lm, record, tokens, skip_first=h.skip_first)
    pruned = prune_lib.prune(g)
    scores = prune_lib.scores(g)
    top = lm.tokenizer.decode([int(g.logit_tokens[0])])
    graphs.append({
      "prompt": repr(prompt), "top logit": repr(top), "p": float(g.logit_probabilities[0]),
      "features": g.n_features, "kept nodes": int(pruned.node_mask.sum()),
      "kept edges": int(pruned.edge_mask.sum()), "replacement": scores["replacement"],
      "completeness": scores["completeness"],
    })  # fmt: skip
  out = {
    "layers": report.rows(),
    "graphs": graphs,
    "train_s": train_s,
    "dictionaries": str(folder),
    "ce_original": report.ce_original,
    "ce_replacement": report.ce_replacement,
  }
  kind = "Cross-layer transcoder" if config.clt.cross_layer else "Per-layer transcoders"
  page = [
    f"# {kind} of {h.model}",
    f"\n{L} layers × {config.clt.features_per_layer} {group.config.architecture} features, "
    f"{config.train.steps} steps of {config.train.batch_size} streamed rows "
    f"({train_s:.0f} s). Per layer on {len(windows['validation'])} held-out windows, and the "
    "replacement model without error terms:\n",
    tables.markdown(report.rows()),
    "\n## Attribution graphs\n",
    tables.markdown(graphs),
  ]
  (workdir / "results.md").write_text("\n".join(page) + "\n")
  (workdir / "results.json").write_text(json.dumps(out, indent=2, default=float))
  return out
