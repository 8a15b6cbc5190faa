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

A sweep trains several dictionaries from the same forward passes, e.g. a CLT and per-layer
transcoders at two targets:

    sweep.architecture = ("per-layer", "cross-layer"); sweep.k = (32, 96)
    variants = {"per-layer": dict(architecture="jumprelu", cross_layer=False),
                "cross-layer": dict(architecture="jumprelu", cross_layer=True)}

On Gemma 3 270M the forward pass is most of a per-layer set's step, so one pass for four
dictionaries costs about what two alone did.
"""

from __future__ import annotations

import json
import pathlib
import re
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
from jaxsae.sae import cross_layer, train_config
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
  variants = train_config.variants(config)
  for name in config.sweep.architecture or (config.sae.architecture,):
    arch = variants.get(name, {}).get("architecture", name)
    where = f"variants.{name}.architecture" if name in variants else "sae.architecture"
    config_check.require(
      arch in ("jumprelu", "relu"),
      p,
      f"{where}={arch!r}: circuit-tracer's CLTs are jumprelu or relu; choose one",
    )
  config_check.require(config.clt.features_per_layer >= 1, p, "clt.features_per_layer must be ≥ 1")
  if p:
    raise ConfigError(p)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, dict]:
  """Train every dictionary of `config` in one streamed pass, write each in circuit-tracer's
  format and report its replacement model and graphs: {name: report}.

  One dictionary (no sweep) is named after its architecture and written to `workdir`. A sweep
  (`sweep.k`: several target L0s; `variants` with `cross_layer` True and False: a CLT and
  per-layer transcoders) trains all of them from the same forward passes, in one jitted step,
  so the model runs once however many there are; each is written to `workdir/<name>` (its label,
  e.g. `per-layer_k32`) and its report carries the pass's `train_s`."""
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
  members = [(g, i) for g in result.groups for i in range(g.size)]
  reports = {}
  for group, index in members:
    name = dictionary_name(group.labels[index] or group.name)
    folder = workdir if len(members) == 1 else workdir / name
    reports[name] = _report(
      config, lm, windows["validation"], result, group, index, folder, (ins, outs), train_s
    )
  return reports


def dictionary_name(label: str) -> str:
  """A sweep member's label as a folder name: "per-layer[k=32]" → "per-layer_k32"."""
  return re.sub(r"[\[\],]+", "_", label.replace("=", "")).strip("_")


def _report(config, lm, windows, result, group, index, folder, hooks, train_s) -> dict:
  """One trained dictionary: its circuit-tracer files, replacement model and graphs."""
  start, h, (ins, outs) = time.perf_counter(), config.harvest, hooks
  member_config = group.member_config(index)
  params = result.member_params(group.name, index)
  record = cross_layer.record(member_config, params, result.scale, result.target_scale, ins, outs)
  if member_config.cross_layer:
    written = circuit_tracer.write_clt(folder / "clt", record, model_name=str(h.model))
  else:
    by_layer = dict(enumerate(record))
    written = circuit_tracer.write_set(folder / "transcoders", by_layer, model_name=str(h.model))
  report = replacement.evaluate(lm, record, windows, skip_first=h.skip_first)
  graphs = [_graph_row(lm, record, prompt, h.skip_first) for prompt in config.clt.prompts]
  out = {
    "layers": report.rows(),
    "graphs": graphs,
    "train_s": train_s,
    "eval_s": time.perf_counter() - start,
    "target_l0": group.members[index].k,
    "cross_layer": member_config.cross_layer,
    "dictionaries": str(written),
    "ce_original": report.ce_original,
    "ce_replacement": report.ce_replacement,
  }
  kind = "Cross-layer transcoder" if member_config.cross_layer else "Per-layer transcoders"
  page = [
    f"# {kind} of {h.model}",
    f"\n{len(ins)} layers × {config.clt.features_per_layer} {member_config.architecture} "
    f"features (target total L0 {out['target_l0']}), {config.train.steps} steps of "
    f"{config.train.batch_size} streamed rows ({train_s:.0f} s, the pass that trained "
    f"{sum(g.size for g in result.groups)} dictionaries). Per layer on {len(windows)} held-out "
    "windows, and the replacement model without error terms:\n",
    tables.markdown(report.rows()),
  ]
  if graphs:
    page += ["\n## Attribution graphs\n", tables.markdown(graphs)]
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "results.md").write_text("\n".join(page) + "\n")
  (folder / "results.json").write_text(json.dumps(out, indent=2, default=float))
  return out


def _graph_row(lm, record, prompt: str, skip_first: int) -> dict:
  tokens = np.asarray(lm.tokenizer.encode(prompt), np.int32)
  g = graph_lib.compute(lm, record, tokens, skip_first=skip_first)
  pruned, scores = prune_lib.prune(g), prune_lib.scores(g)
  top = lm.tokenizer.decode([int(g.logit_tokens[0])])
  return {
    "prompt": repr(prompt), "top logit": repr(top), "p": float(g.logit_probabilities[0]),
    "features": g.n_features, "kept nodes": int(pruned.node_mask.sum()),
    "kept edges": int(pruned.edge_mask.sum()), "replacement": scores["replacement"],
    "completeness": scores["completeness"],
  }  # fmt: skip
