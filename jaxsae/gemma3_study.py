"""A real model end to end (experiments/gemma3.py; Gemma 3 270M by default), every stage timed:

  1. load the model; its loss and bits per byte on the test split (BOS-first windows);
  2. harvest the hook on training and held-out windows (main_job.harvest_stores);
  3. time that forward beside transformers' on the same windows (bench.hf_forward);
  4. train every SAE of `config.sweep` in one pass (TopK, JumpReLU, ReLU at about one L0);
  5. score each on held-out activations (L0, FVU, dead fraction) and spliced into the model
     (ΔCE, CE recovered, KL), beside PCA and random-TopK baselines at the TopK's k;
  6. the SmoothQuant study on the model (quant.study) with its real outlier channels.

Results go to <workdir>/results.json after each stage (a rerun resumes the harvest and the
training and skips finished evaluations), stage records to metrics.jsonl, and the report
(gemma3_report) to results.md / results.csv and, when asked, a published page.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import time

import jax
import ml_collections
import numpy as np

from jaxsae import config_check, main_job, run_log
from jaxsae.bench import hf_forward
from jaxsae.errors import ConfigError
from jaxsae.evals import baselines, downstream
from jaxsae.lm import evaluate as lm_eval_lib
from jaxsae.lm import loss as loss_lib
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import pretrained
from jaxsae.quant import study as quant_study
from jaxsae.sae import evaluate, export, row_sources
from jaxsae.sae import train as train_lib
from jaxsae.text import model_corpus, pipeline

SECTIONS = ("lm_eval", "speed", "evals", "smoothquant")  # Beside the main job's fields.
RESULTS = "results.json"


def base_config() -> ml_collections.ConfigDict:
  """The main job's fields (harvest, sae, sweep, train, …) plus this study's sections."""
  c = main_job.base_config("topk")
  c.harvest.bos = True
  c.lm_eval = ml_collections.ConfigDict()
  c.lm_eval.split = "test"  # Split scored for the model's own loss and bits per byte.
  c.lm_eval.max_windows = 0  # Windows of harvest.seq_len scored (0: the whole split).
  c.lm_eval.batch_size = 8  # Windows per forward (the logits are vocab-wide).
  c.speed = ml_collections.ConfigDict()
  c.speed.windows = 32  # Held-out windows timed through both forwards (0: skip the stage).
  c.speed.batch_size = 16  # Windows per forward, both sides.
  c.speed.repeats = 3  # Passes per side, in turns; the median pass is reported.
  c.evals = ml_collections.ConfigDict()
  c.evals.delta_ce_windows = 32  # Held-out windows spliced for ΔCE, CE recovered and KL.
  c.evals.batch_size = 8  # Windows per spliced forward (two B × T × vocab logit arrays each).
  c.smoothquant = quant_study.base_config()
  c.smoothquant.models = ""  # "": skip the study; else its models (e.g. the harvested one).
  c.smoothquant.outlier.models = ""
  return c


def main_part(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The main-job config inside this study's config."""
  return ml_collections.ConfigDict({k: v for k, v in config.items() if k not in SECTIONS})


def validate(config: ml_collections.ConfigDict) -> None:
  """Raise one ConfigError with every problem (unknown keys, values) before any compute."""
  p = config_check.unknown_keys(config, base_config())
  for section in ("lm_eval", "speed", "evals"):
    for key, value in config[section].items():
      if isinstance(value, int) and value < 0:
        p.append(f"{section}.{key}={value} must be ≥ 0")
  for key in ("batch_size", "repeats"):
    config_check.require(config.speed[key] >= 1, p, f"speed.{key} must be at least 1")
  config_check.require(config.lm_eval.batch_size >= 1, p, "lm_eval.batch_size must be ≥ 1")
  for key in ("delta_ce_windows", "batch_size"):
    config_check.require(config.evals[key] >= 1, p, f"evals.{key} must be at least 1")
  config_check.require_choice(config.lm_eval.split, ("train", "validation", "test"), "split", p)
  for name, check in (("", main_job.validate), ("smoothquant.", quant_study.validate)):
    if name and not quant_study.model_names(config.smoothquant):
      continue
    try:
      check(main_part(config) if not name else config.smoothquant)
    except ConfigError as e:
      p += [f"{name}{problem}" for problem in e.problems]
  if p:
    raise ConfigError(p)


def load_results(workdir: pathlib.Path) -> dict:
  path = pathlib.Path(workdir) / RESULTS
  return json.loads(path.read_text()) if path.is_file() else {}


class Stages:
  """Wall time (and tokens/s) of each stage into results["stages"], metrics.jsonl and stdout.
  A stage timed by an earlier, interrupted run keeps that first complete record."""

  def __init__(self, workdir: pathlib.Path, results: dict):
    self.workdir, self.results = workdir, results
    results.setdefault("stages", {})

  def save(self) -> None:
    if jax.process_index() == 0:
      tmp = self.workdir / (RESULTS + ".tmp")
      tmp.write_text(json.dumps(self.results, indent=1, default=str))
      tmp.replace(self.workdir / RESULTS)

  @contextlib.contextmanager
  def __call__(self, name: str):
    info: dict = {}
    load_before, start = os.getloadavg()[0], time.perf_counter()
    yield info
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "load_before": load_before, "load_after": os.getloadavg()[0]}
    if info.get("tokens"):
      record |= {"tokens": info["tokens"], "tokens_per_s": info["tokens"] / seconds}
    stages = self.results["stages"]
    stages.setdefault(name, record)
    index = list(stages).index(name)
    with run_log.RunLog(self.workdir, tensorboard=False) as log:
      numbers = {k: v for k, v in record.items() if isinstance(v, (int, float))}
      log.write(index, {f"{name}/{k}": v for k, v in numbers.items()}, split="stage")
    rate = f", {record['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in record else ""
    print(f"[stage] {name}: {seconds:,.1f} s{rate}", flush=True)
    self.save()


def model_eval(config, lm) -> dict:
  """The model's loss and bits per byte on `lm_eval.split`, windows as the harvest's."""
  h, e = config.harvest, config.lm_eval
  corpus = model_corpus.for_model(lm, h)
  vocab = lm.config.vocab_size
  windows = pipeline.load_windows(corpus, e.split, lm.tokenizer, h.seq_len, h.bos, vocab)
  n = min(e.max_windows, len(windows)) if e.max_windows else len(windows)
  step = jax.jit(lm_eval_lib.make_eval_step(lm.module, lm.tokenizer.token_byte_lengths()))
  totals = np.zeros(3, np.float64)  # nats, tokens, bytes
  bar = run_log.progress(n * h.seq_len, desc=f"{e.split} loss")
  for batch in pipeline.eval_batches(windows, e.batch_size, max_sequences=n):
    totals += np.asarray(jax.device_get(step(lm.params, batch)), np.float64)
    bar.update(int(batch["weights"].sum()) * h.seq_len)
  bar.close()
  nats, tokens, n_bytes = totals
  return {
    "split": e.split,
    "windows": n,
    "windows_in_split": len(windows),
    "seq_len": h.seq_len,
    "bos": bool(h.bos),
    "loss": float(nats / tokens),
    "bits_per_byte": loss_lib.bits_per_byte(nats, n_bytes),
    "tokens": int(tokens),
    "bytes": int(n_bytes),
  }


def evaluate_saes(config, lm, data: main_job.Harvested, result, workdir: pathlib.Path) -> dict:
  """Rows per SAE and baseline (held-out metrics, spliced losses) and the reference losses."""
  h = config.harvest
  windows = data.eval_windows[: config.evals.delta_ce_windows]
  batch = config.evals.batch_size
  reference = downstream.reference_losses(lm, windows, h.hook, h.skip_first, batch)
  history = run_log.read_jsonl(workdir / "metrics.jsonl", split="train")
  final = history[-1] if history else {}  # The last training record, after a resume too.

  def measure(name, encode_decode, variables, extra) -> dict:
    measured = downstream.held_out_and_spliced(
      lm, windows, h.hook, encode_decode, variables, data.held_out, reference, h.skip_first, batch
    )
    row = {"method": name, **extra, **measured}
    print(f"[eval] {name}: L0 {row['l0']:.1f}, FVU {row['fvu']:.4f}, ΔCE {row['delta_ce']:.4f}")
    return row

  rows, ks = [], []
  for group in result.groups:
    for index, label in enumerate(group.labels):
      member, member_config = group.members[index], group.member_config(index)
      folder = workdir / "saes" / (label or group.name)
      if jax.process_index() == 0:
        meta = {"hook": h.hook, "model": str(h.model), "steps": int(result.state.step)}
        export.save(folder, member_config, result.member_variables(group.name, index),
                    result.scale, meta)  # fmt: skip
      raw_config, raw_variables, _ = export.load(folder)  # What users load: raw activations.
      prefix = f"{label}/" if f"{label}/fvu" in final else ""
      extra = {
        "architecture": member_config.architecture,
        "k": member.k if member_config.architecture in ("topk", "batchtopk") else "",
        "sparsity_coefficient": member.sparsity_coefficient,
        "train_fvu": final.get(f"{prefix}fvu", float("nan")),
        "train_dead_fraction": final.get(f"{prefix}dead_fraction", float("nan")),
      }
      rows.append(measure(f"SAE ({label})", evaluate.encode_decode(raw_config), raw_variables,
                          extra))  # fmt: skip
      if extra["k"]:
        ks.append(member.k)
  l0 = ks[0] if ks else max(1, round(rows[0]["l0"]))
  sample = row_sources.sample(data.train, config.data.normalization_samples, config.seed)
  n_latents = result.groups[0].config.n_latents
  pca = baselines.pca_variables(sample, l0)
  rows.append(measure(f"PCA top-{l0}", baselines.pca_encode_decode, pca, {"k": l0}))
  rand_config, rand_vars = baselines.random_topk(
    sample.shape[1], n_latents, l0, sample.mean(0), config.seed
  )
  rows.append(measure(f"random TopK-{l0} (n={n_latents})", evaluate.encode_decode(rand_config),
                      rand_vars, {"k": l0}))  # fmt: skip
  return {"rows": rows, "reference": reference, "delta_ce_windows": len(windows)}


def smoothquant_summary(workdir: pathlib.Path) -> dict:
  """Float, naive and best-smoothed W8A8 rows of the study, per activation mode."""
  from jaxsae.quant import report as quant_report

  lines = (workdir / "w8a8.jsonl").read_text(encoding="utf-8").splitlines()
  rows = [json.loads(line) for line in lines if line]
  return {"rows": rows, "best": quant_report.best_rows(rows)}


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Every stage (see the module docstring); returns the results (as in results.json)."""
  from jaxsae import gemma3_report

  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = load_results(workdir)
  results["config"] = json.loads(config.to_json_best_effort())
  results["machine"] = {
    "cpus": os.cpu_count(),
    "jax_backend": jax.default_backend(),
    "jax_devices": jax.device_count(),
    "jax": jax.__version__,
  }
  stage = Stages(workdir, results)
  h, started = config.harvest, time.perf_counter()
  with stage("load model"):
    lm = pretrained.load(h.model)
  hooks_lib.Hooks.make([h.hook]).check(lm.hook_names())
  results["model"] = {
    "name": str(h.model),
    "source": lm.metadata.get("source"),
    "n_layers": lm.config.n_layers,
    "d_model": lm.config.d_model,
    "vocab_size": lm.config.vocab_size,
  }
  if "lm_eval" not in results:
    with stage(f"{config.lm_eval.split}-split loss") as info:
      results["lm_eval"] = model_eval(config, lm)
      info["tokens"] = results["lm_eval"]["windows"] * h.seq_len
  with stage("harvest") as info:
    data = main_job.harvest_stores(main_part(config), lm, workdir)
    info["tokens"] = (h.train_windows + h.eval_windows) * h.seq_len
  if config.speed.windows and "speed" not in results:
    with stage("forward speed: jaxsae vs transformers"):
      windows = data.eval_windows[: config.speed.windows, :-1]  # Held-out, BOS first.
      results["speed"] = hf_forward.compare(
        lm, windows, h.hook, batch_size=config.speed.batch_size, repeats=config.speed.repeats
      )
  with stage("train SAEs") as info:
    result = train_lib.train(main_job.sae_part(main_part(config)), workdir, data.train)
    info["tokens"] = config.train.steps * config.train.batch_size
  if "saes" not in results:
    with stage("evaluate SAEs and baselines"):
      results["saes"] = evaluate_saes(config, lm, data, result, workdir)
      with run_log.RunLog(workdir, tensorboard=False) as log:
        for row in results["saes"]["rows"]:
          numbers = {k: v for k, v in row.items() if isinstance(v, float)}
          log.write(config.train.steps, {f"{row['method']}/{k}": v for k, v in numbers.items()},
                    split="eval")  # fmt: skip
  del lm, data, result  # The study loads the model again; free this copy's memory first.
  if quant_study.model_names(config.smoothquant) and "smoothquant" not in results:
    with stage("SmoothQuant study"):
      quant_study.run(config.smoothquant, workdir / "smoothquant")
      results["smoothquant"] = smoothquant_summary(workdir / "smoothquant")
  results["last_run_seconds"] = time.perf_counter() - started
  stage.save()
  if jax.process_index() == 0:
    gemma3_report.write(workdir)
  return results
