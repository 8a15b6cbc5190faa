"""Bridges between the shipped dense and weight-sparse models, then steering the dense model
through the sparse model's quote-type channel (Gao et al. 2025, §bridges).

  python -m experiments.bridges --workdir=runs/bridges                   # ~10 min on 2 cores
  python -m experiments.bridges --config=experiments/configs/bridges.py:quick --workdir=/tmp/b

Trains the bridges on train-split windows (both language models frozen), reports every loss term
on validation windows before (least-squares init) and after training, and runs the steering
report on closing_quote: channels chosen on train-split pairs, effects measured on
validation-split pairs, against random channels edited by the same amount. Writes to --workdir:
bridges/ (safetensors + JSON), metrics.jsonl and tensorboard/, results.json, bridges.md and
bridges.png.
"""

import json
import math
import pathlib
import time

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, run_log, tables
from jaxsae.errors import JaxsaeError
from jaxsae.models import pretrained
from jaxsae.sparse import bridge_steering, task_suite
from jaxsae.sparse import bridges as bridges_lib
from jaxsae.text import model_corpus, pipeline

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "bridges.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Bridges config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/bridges", "Directory for bridges and results.")


def _sites(value: str, n_layers: int) -> str | tuple[str, ...]:
  if value == bridges_lib.ALL_SITES:
    return value
  return bridges_lib.check_sites([s.strip() for s in value.split(",") if s.strip()], n_layers)


def bridge_config(config, n_layers: int) -> bridges_lib.BridgeConfig:
  b = config.bridge
  return bridges_lib.BridgeConfig(
    sites=_sites(b.sites, n_layers),
    topk_fraction=b.topk_fraction,
    steps=b.steps,
    batch_size=b.batch_size,
    lr=b.lr,
    seed=config.seed,
    init=b.init,
    init_windows=b.init_windows,
    log_every=b.log_every,
  )


def _test_loss(lm) -> float | None:
  return lm.metadata.get("test_report", {}).get("model", {}).get("loss")


def run(config, workdir) -> dict:
  """The whole experiment; returns what results.json holds."""
  start = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  dense, sparse = pretrained.load(config.dense), pretrained.load(config.sparse)
  bridges_lib.check_pair(None, dense, sparse)
  n_layers = dense.config.n_layers
  bcfg = bridge_config(config, n_layers)
  steer_sites = _sites(config.steering.sites, n_layers)
  trained_sites = bcfg.resolve_sites(n_layers)
  if steer_sites == bridges_lib.ALL_SITES:
    steer_sites = trained_sites
  if not set(steer_sites) <= set(trained_sites):
    raise JaxsaeError(
      f"steering.sites {list(steer_sites)} must be among the trained bridge sites "
      f"{list(trained_sites)}; set steering.sites to some of them or to all"
    )

  d = config.data
  splits = [model_corpus.split_fractions(m) for m in (dense, sparse)]
  held_out = [(s.validation, s.test) for s in splits]
  if held_out[0] != held_out[1]:
    raise JaxsaeError(
      f"{config.dense} and {config.sparse} hold out different shares (validation, test) "
      f"{held_out[0]} and {held_out[1]}; bridges need a validation split held out from both"
    )
  corpus = model_corpus.for_model(dense, d)
  train = pipeline.load_split(corpus, "train", dense.tokenizer, d.seq_len)
  validation = pipeline.load_split(corpus, "validation", dense.tokenizer, d.seq_len)

  def evaluate(bridges):
    return bridges_lib.evaluate_bridges(
      bridges, dense, sparse, validation.windows, config.eval.batch_size, config.eval.windows
    )

  initial = bridges_lib.make_bridges(bcfg, dense, sparse, train.windows)
  validation_init = evaluate(initial)
  result = bridges_lib.train_bridges(
    bcfg, dense, sparse, train.windows, workdir=workdir, bridges=initial
  )
  validation_trained = evaluate(result.bridges)
  with run_log.RunLog(workdir) as log:
    log.write(0, validation_init, split="validation")
    log.write(bcfg.steps, validation_trained, split="validation")
  bridges_lib.save_bridges(
    workdir / "bridges",
    result.bridges,
    bcfg,
    {"dense": str(config.dense), "sparse": str(config.sparse), "seq_len": d.seq_len},
  )

  s = config.steering
  choose = task_suite.build_task(
    s.task, corpus.read("train"), dense.tokenizer, s.n_pairs, s.max_len, config.seed
  )
  measure = task_suite.build_task(
    s.task, corpus.read("validation"), dense.tokenizer, s.n_pairs, s.max_len, config.seed
  )
  steering = bridge_steering.steering_report(
    dense, sparse, result.bridges, choose, measure, steer_sites, s.n_controls, config.seed
  )
  results = {
    "models": {
      "dense": {"name": str(config.dense), "test_loss": _test_loss(dense)},
      "sparse": {"name": str(config.sparse), "test_loss": _test_loss(sparse)},
    },
    "bridge_config": bcfg.to_dict(),
    "encoder_k": result.bridges.k,
    "train": {
      "steps": bcfg.steps,
      "tokens": bcfg.steps * bcfg.batch_size * d.seq_len,
      "seconds": result.seconds,
      "tokens_per_second": result.tokens_per_second,
      "last": result.history[-1],
    },
    "validation": {
      "windows": config.eval.windows,
      "seq_len": d.seq_len,
      "init": validation_init,
      "trained": validation_trained,
    },
    "steering": steering,
  }
  results["runtime_seconds"] = time.time() - start
  (workdir / "results.json").write_text(json.dumps(_finite(results), indent=2) + "\n")
  (workdir / "bridges.md").write_text(markdown(results, trained_sites))
  figure(results, trained_sites, workdir / "bridges.png")
  return results


def _finite(x):
  """JSON-safe: non-finite floats become strings ("nan", "inf")."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  return x


_TOTALS = ("ce_sparse", "kl_dense_sparse", *bridges_lib.TERMS, "total")


def markdown(results: dict, sites) -> str:
  v, st, tr = results["validation"], results["steering"], results["train"]
  dense, sparse = results["models"]["dense"], results["models"]["sparse"]
  totals = [
    {"term": t, "init (least squares)": v["init"][t], "trained": v["trained"][t]} for t in _TOTALS
  ]
  per_site = [
    {
      "site": s,
      **{t: v["trained"][f"{t}/{s}"] for t in bridges_lib.TERMS},
      **{f"{t} (init)": v["init"][f"{t}/{s}"] for t in ("kl_hybrid_enc", "kl_hybrid_dec")},
    }
    for s in sites
  ]
  steer_cols = [
    "site",
    "channel",
    "score",
    "diff_a_before",
    "diff_a_after",
    "diff_b_before",
    "diff_b_after",
    "flip_rate",
    "shift",
    "control_diff_a_after",
    "control_diff_b_after",
    "control_flip_rate",
    "control_shift",
  ]
  best = next(r for r in st["sites"] if r["site"] == st["best_site"])
  base, ref = st["baseline"], st["sparse_reference"]
  return "\n".join(
    [
      "# Bridges between a dense and a weight-sparse transformer",
      "",
      f"Dense model `{dense['name']}` (test loss {dense['test_loss']}), sparse model "
      f"`{sparse['name']}` (test loss {sparse['test_loss']}); both frozen, bridges trained "
      f"{tr['steps']} steps ({tr['tokens']} tokens, {tr['seconds']:.0f} s, "
      f"{tr['tokens_per_second']:.0f} tokens/s), encoder AbsTopK k = {results['encoder_k']}.",
      "",
      f"## Loss terms on {v['windows']} validation windows of {v['seq_len']} tokens",
      "",
      "Every coefficient 1; NMSE and hybrid KL summed over the sites. CE and KL(dense‖sparse) "
      "do not depend on the bridges.",
      "",
      tables.markdown(totals),
      "",
      "Per site (trained; hybrid KL of the least-squares init for comparison):",
      "",
      tables.markdown(per_site),
      "",
      f"## Steering on {st['task']} ({st['n_pairs']} validation pairs)",
      "",
      f"Logit difference d = ℓ({st['tok']!r}) − ℓ({st['alt']!r}) of the dense model at the last "
      f"token; unsteered accuracy {base['accuracy']:.3f}, mean d on A prompts "
      f"{base['diff_a']:.3f}, on B prompts {base['diff_b']:.3f}. A prompts get the sparse "
      "channel set to the B-class mean and B prompts to the A-class mean (class means from "
      "train-split pairs); the dense model receives Dec(h_s′) − Dec(h_s) at the same site. "
      f"Controls: {st['n_controls']} random channel(s) per site moved by the same amount. "
      "flip_rate: share of prompts whose predicted quote changes; shift: mean move of d toward "
      "the other class.",
      "",
      tables.markdown(st["sites"], steer_cols),
      "",
      f"Best site: {best['site']} (channel {best['channel']}): flip rate {best['flip_rate']:.3f} "
      f"vs {best['control_flip_rate']:.3f} for the controls; shift {best['shift']:.3f} vs "
      f"{best['control_shift']:.3f}. The same edit made in the sparse model itself (its own "
      f"logits; unsteered accuracy {ref['accuracy']:.3f}, mean d {ref['diff_a_before']:.3f} on A "
      f"and {ref['diff_b_before']:.3f} on B): flip rate {ref['flip_rate']:.3f}, shift "
      f"{ref['shift']:.3f}.",
      "",
      f"Total runtime {results['runtime_seconds']:.0f} s.",
      "",
    ]
  )


def figure(results: dict, sites, path) -> pathlib.Path:
  """Per-site hybrid KL, per-site flip rate (channel vs control) and per-prompt logit
  differences before/after steering at the best site."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  v, st = results["validation"]["trained"], results["steering"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
  x = np.arange(len(sites))
  ax = axes[0]
  for offset, term in ((-0.2, "kl_hybrid_enc"), (0.2, "kl_hybrid_dec")):
    ax.bar(x + offset, [v[f"{term}/{s}"] for s in sites], 0.4, label=term)
  ax.axhline(v["kl_dense_sparse"], color="k", ls="--", lw=1, label="KL(dense‖sparse)")
  ax.set_xticks(x, [s.removeprefix("blocks.") for s in sites], rotation=45, ha="right")
  ax.set(ylabel="KL from the dense model (nats)", title="Hybrid passes from each site")
  ax.legend(fontsize=8)

  ax = axes[1]
  rows = {r["site"]: r for r in st["sites"]}
  steered = [s for s in sites if s in rows]
  xs = np.arange(len(steered))
  ax.bar(xs - 0.2, [rows[s]["shift"] for s in steered], 0.4, label="task channel")
  ax.bar(xs + 0.2, [rows[s]["control_shift"] for s in steered], 0.4, label="random channel")
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xticks(xs, [s.removeprefix("blocks.") for s in steered], rotation=45, ha="right")
  ax.set(
    ylabel="logit-difference shift toward the other answer (nats)",
    title=f"Steering {st['task']} (flip rates in bridges.md)",
  )
  ax.legend(fontsize=8)

  ax = axes[2]
  p = st["prompts"]
  for side, color in (("a", "C0"), ("b", "C3")):
    label = st["tok"] if side == "a" else st["alt"]
    before = np.asarray(p[f"before_{side}"])
    ax.scatter(before, p[f"after_{side}"], s=12, color=color, label=f"answer {label!r}: steered")
    ax.scatter(
      before, p[f"control_after_{side}"], s=12, color=color, marker="x", alpha=0.35,
      label=f"answer {label!r}: control",
    )  # fmt: skip
  lim = np.abs(np.concatenate([p["before_a"], p["before_b"], p["after_a"], p["after_b"]])).max()
  ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8)
  ax.axhline(0, color="k", lw=0.8)
  ax.axvline(0, color="k", lw=0.8)
  ax.set(
    xlabel="logit difference before",
    ylabel="logit difference after",
    title=f"Per prompt at {p['site']}",
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return pathlib.Path(path)


def main(argv):
  del argv
  results = run(_CONFIG.value, _WORKDIR.value)
  v, st = results["validation"]["trained"], results["steering"]
  best = next(r for r in st["sites"] if r["site"] == st["best_site"])
  print(
    f"validation: total {v['total']:.3f} (CE sparse {v['ce_sparse']:.3f}, KL dense‖sparse "
    f"{v['kl_dense_sparse']:.3f}, NMSE enc {v['nmse_enc']:.3f}, NMSE dec {v['nmse_dec']:.3f}, "
    f"hybrid KL enc {v['kl_hybrid_enc']:.3f}, dec {v['kl_hybrid_dec']:.3f})"
  )
  print(
    f"steering {st['task']} at {best['site']} (channel {best['channel']}): flip rate "
    f"{best['flip_rate']:.3f} vs control {best['control_flip_rate']:.3f} (the same edit in the "
    f"sparse model: {st['sparse_reference']['flip_rate']:.3f})"
  )
  print(f"wrote {_WORKDIR.value}/results.json, bridges.md and bridges.png")


if __name__ == "__main__":
  cli.run(main)
