"""Evaluate any dictionary (python -m experiments.evaluate): whatever `export.load` reads (a
jaxsae export, SAELens folders and release ids, Gemma Scope, sparsify) on a model and its text.

  1. load the SAE (variables on raw activations) and the model; the hook is `harvest.hook`, else
     the one the SAE's files record; the SAE's d_in must be the hook's width; `harvest.bos` and
     `harvest.skip_first` left unset follow the model (`resolve_bos`);
  2. harvest the hook on validation-split windows (~`tokens` positions) into a float32 store;
  3. held-out L0, FVU, dead fraction and firing density; ΔCE, CE recovered and KL with the
     reconstruction spliced into the model (`downstream.held_out_and_spliced`), beside the main
     job's same-L0 baselines (PCA truncation, random TopK) fitted on training-split windows;
  4. N2G precision / recall / F1 on the store and, on Python source, the probe loss of the TopK
     paper's code tasks (`ablation.measure`); a feature browser of N2G-scored latents;
  5. write results.md / .csv / .jsonl, density.csv, probes.csv and browser/index.html.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxsae import config_check, main_job, tables
from jaxsae.ablation import interpret, measure
from jaxsae.activations import harvest as harvest_lib
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.evals import baselines, downstream, metrics
from jaxsae.evals import probes as probes_lib
from jaxsae.interp import contexts
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import pretrained
from jaxsae.sae import evaluate, export, row_sources
from jaxsae.sae.base import FIRE_THRESHOLD

COLUMNS = (
  "method",
  "l0",
  "fvu",
  "dead_fraction",
  "dense_fraction",
  "delta_ce",
  "ce_recovered",
  "kl",
  "probe_loss",
  "n2g_f1",
)
PROBE_MODES = ("auto", "on", "off")
TRAINING_ONLY = ("train_windows", "eval_windows", "dtype", "streaming")
DENSE = 0.1  # A latent firing on more than this share of tokens counts as dense.
# Hugging Face model_type prefixes of families whose tokenizers put a BOS before every text.
BOS_MODEL_TYPES = ("gemma", "llama", "mistral")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Window sampling, N2G latents and browser cards.
  c.sae = "default"  # An SAE folder or id, as `jaxsae.sae.export.load` takes it.
  c.tokens = 16384  # Held-out positions (validation-split windows of harvest.seq_len).
  # The main job's harvest section (model, corpus, seq_len, bos, skip_first, ...) less its
  # training-store fields: the held-out windows come from `tokens`.
  c.harvest = main_job.base_config().harvest
  for key in TRAINING_ONLY:
    del c.harvest[key]
  c.harvest.hook = ""  # "": the hook the SAE's files record (jaxsae or TransformerLens names).
  # None (unset): BOS first where the model's tokenizer adds one (Gemma, Llama, Mistral), and
  # skip_first = 1 with a BOS (its position is an attention sink, outside what SAEs model), else 0.
  for key, kind in (("bos", bool), ("skip_first", int)):
    del c.harvest[key]
    c.harvest[key] = config_dict.placeholder(kind)
  c.evals = ml_collections.ConfigDict()
  c.evals.splice_windows = 0  # Held-out windows spliced for ΔCE, CE recovered, KL (0: all).
  c.evals.batch_size = 16  # Windows per spliced forward (logits are B × T × vocab).
  c.evals.baselines = True  # PCA and random TopK at the SAE's L0, as in the main job.
  c.evals.baseline_windows = 64  # Training-split windows streamed for the baselines' fit.
  c.evals.baseline_rows = 8192  # Of their activations, rows the PCA is fitted on.
  c.evals.probes = "auto"  # "auto": on Python source (harvest.pattern *.py); "on"; "off".
  c.evals.probe_windows = 128  # Labelled validation windows (half fit the probes, half score).
  c.evals.n2g_latents = 512  # Latents explained by N2G (-1: all; 0: skip N2G and the browser).
  c.evals.browser_latents = 64  # Latents with a page in the feature browser (0: none).
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  h, e, p = config.harvest, config.evals, []
  config_check.require(config.tokens >= 1, p, f"tokens={config.tokens} must be at least 1")
  for name in ("seq_len", "batch_size", "chunk_rows"):
    config_check.require(h[name] >= 1, p, f"harvest.{name}={h[name]} must be at least 1")
  if h.skip_first is not None:
    config_check.require(
      0 <= h.skip_first < h.seq_len, p, f"harvest.skip_first={h.skip_first} must be in [0, seq_len)"
    )
  if h.bos:
    config_check.require(h.seq_len >= 3, p, f"harvest.seq_len={h.seq_len} must be ≥ 3 with bos")
  for name in ("splice_windows", "probe_windows", "browser_latents"):
    config_check.require(e[name] >= 0, p, f"evals.{name}={e[name]} must be ≥ 0")
  for name in ("batch_size", "baseline_windows", "baseline_rows"):
    config_check.require(e[name] >= 1, p, f"evals.{name}={e[name]} must be at least 1")
  config_check.require(e.n2g_latents >= -1, p, f"evals.n2g_latents={e.n2g_latents} must be ≥ -1")
  config_check.require_choice(e.probes, PROBE_MODES, "evals.probes", p)
  if h.hook and hooks_lib.name_problem(h.hook):
    p.append(f"harvest.hook: {hooks_lib.name_problem(h.hook)}")
  if p:
    raise ConfigError(p)


def adds_bos(lm) -> bool:
  """Whether the model's tokenizer begins every text with BOS, so the model was trained with one
  first: Gemma and Llama-family (Llama, Mistral) checkpoints, by their model_type."""
  return str(lm.metadata.get("model_type") or "").startswith(BOS_MODEL_TYPES)


def resolve_bos(harvest, lm) -> None:
  """Fill `harvest.bos` and `harvest.skip_first` where unset (None): BOS first when the model's
  tokenizer adds one, and the first position skipped when there is a BOS; set values stay."""
  if harvest.bos is None:
    harvest.bos = adds_bos(lm)
  if harvest.skip_first is None:
    harvest.skip_first = 1 if harvest.bos else 0
  if harvest.bos and harvest.seq_len < 3:
    raise ConfigError([f"harvest.seq_len={harvest.seq_len} must be ≥ 3 with bos"])
  if not 0 <= harvest.skip_first < harvest.seq_len:
    raise ConfigError([f"harvest.skip_first={harvest.skip_first} must be in [0, seq_len)"])


def recorded_hook(metadata: dict) -> str | None:
  """The hook an SAE's metadata names, in jaxsae's naming: "hook" (what `export.load` gives
  every format), else a SAELens cfg's hook_name (top level or in its metadata); or None."""
  nested = metadata.get("metadata") if isinstance(metadata.get("metadata"), dict) else {}
  for value in (metadata.get("hook"), metadata.get("hook_name"), nested.get("hook_name")):
    if isinstance(value, str) and value:
      return hooks_lib.canonical(value)
  return None


def check_width(sae_config, lm, hook: str, sae: str, model: str, recorded: str | None) -> None:
  """Raise a JaxsaeError naming both widths and the fix unless the SAE reads the hook's width."""
  hooks_lib.Hooks.make([hook]).check(lm.hook_names())
  width = harvest_lib.hook_widths(lm, (hook,))[hook]
  if sae_config.d_in != width:
    named = f"--hook={recorded}, which its files name" if recorded else "--hook=blocks.L.<site>"
    raise JaxsaeError(
      f"the SAE {sae} reads vectors of d_in={sae_config.d_in}, but hook {hook} of model {model} "
      f"is {width} wide; pass the hook the SAE was trained on ({named}) or its model "
      "(--model=NAME_OR_PATH)"
    )


def _store_dir(workdir: pathlib.Path, h, eval_windows: int, train_windows: int) -> pathlib.Path:
  """A store folder per harvest setting, so one workdir serves several SAEs and hooks."""
  key = json.dumps({**h.to_dict(), "eval": eval_windows, "train": train_windows}, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:10]
  return workdir / "stores" / f"{h.hook}-{digest}"


def harvest(config, lm, workdir: pathlib.Path) -> main_job.Harvested:
  """The held-out store and windows; training-split windows streamed (never stored)."""
  h = config.harvest
  eval_windows = -(-config.tokens // h.seq_len)
  train_windows = config.evals.baseline_windows if config.evals.baselines else 1
  job = ml_collections.ConfigDict({"seed": config.seed, "harvest": h.to_dict()})
  job.harvest.update(
    train_windows=train_windows, eval_windows=eval_windows, streaming=True, dtype="float32"
  )
  return main_job.harvest_stores(job, lm, _store_dir(workdir, h, eval_windows, train_windows))


def density(codes: contexts.SparseCodes) -> tuple[dict, list[dict]]:
  """(summary columns, histogram rows) of latent firing frequencies on the held-out rows."""
  fires = codes.fire_counts(FIRE_THRESHOLD)
  counts, edges = metrics.density_histogram(fires, codes.n_rows)
  alive = fires[fires > 0] / codes.n_rows
  summary = {
    "dense_fraction": float(np.mean(fires > DENSE * codes.n_rows)),
    "density_median": float(np.median(alive)) if len(alive) else 0.0,
  }
  rows = [{"log10_density_from": "never fired", "log10_density_to": "", "latents": int(counts[0])}]
  rows += [
    {"log10_density_from": float(lo), "log10_density_to": float(hi), "latents": int(n)}
    for lo, hi, n in zip(edges[:-1], edges[1:], counts[1:], strict=True)
  ]
  return summary, rows


def encoder(sae_config, variables):
  """raw x (B, D) -> latents (B, n) as numpy, jitted (eager Flax compiles every op apart)."""
  fn = jax.jit(evaluate.encode_decode(sae_config))
  return lambda x: np.asarray(fn(variables, jnp.asarray(x, jnp.float32))[0])


def _wants_probes(config) -> bool:
  mode = config.evals.probes
  if mode == "auto":
    return config.evals.probe_windows > 0 and config.harvest.pattern.endswith(".py")
  return mode == "on"


def probes(config, lm, sae_config, variables):
  """(columns, per-task rows) of the probe loss; in "auto" mode a tokenizer whose tokens do
  not align with the source's bytes skips it with a note."""
  try:
    data = measure.probe_dataset(config, lm)
  except JaxsaeError as e:
    if config.evals.probes == "on":
      raise
    print(f"[evaluate] probes skipped: {e}")
    return {}, []
  encode = encoder(sae_config, variables)
  report = probes_lib.fit_probes(
    encode(data.x_train), data.labels_train, encode(data.x_test), data.labels_test, data.tasks
  )
  neurons = measure.probe_neurons(data)
  columns = {
    "probe_loss": report.probe_loss,
    "probe_prior_loss": report.prior_loss,
    "probe_loss_neurons": neurons.probe_loss,
  }
  return columns, report.rows()


def interpretability(config, lm, data, hook, sae_config, variables, workdir, title):
  """(columns, density rows): density, N2G and the browser from one pass of codes."""
  encode = encoder(sae_config, variables)
  store = data.held_out.store
  columns, density_rows = density(contexts.sparse_codes_of_store(store, hook, encode))
  e = config.evals
  if e.n2g_latents != 0:
    summary, scores = interpret.n2g_scores(store, hook, encode, e.n2g_latents, config.seed)
    columns.update(summary)
    if e.browser_latents > 0:
      W_dec = np.asarray(variables["params"]["W_dec"], np.float32)
      index = interpret.write_feature_browser(
        workdir / "browser", title, lm, store, hook, encode, W_dec, scores,
        e.browser_latents, config.seed,
      )  # fmt: skip
      columns["browser"] = str(index)
  return columns, density_rows


def write(workdir: pathlib.Path, rows: list[dict], header: str, extra: dict) -> None:
  """results.md (a header line and the table), results.csv (every column), results.jsonl."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  (workdir / "results.md").write_text(f"{header}\n\n{tables.markdown(rows, COLUMNS)}\n")
  tables.write_csv(workdir / "results.csv", rows, columns)
  with open(workdir / "results.jsonl", "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, default=str) + "\n")
  for name, table in extra.items():
    if table:
      tables.write_csv(workdir / name, table, list(table[0]))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Every step of the module docstring; returns the table's rows (SAE first, then baselines)."""
  validate(config)
  config = ml_collections.ConfigDict(config.to_dict())  # An unlocked copy to resolve the hook.
  sae_config, variables, metadata = export.load(config.sae)
  recorded = recorded_hook(metadata)
  hook = hooks_lib.canonical(config.harvest.hook or recorded or "")
  if not hook:
    raise JaxsaeError(
      f"the SAE {config.sae} records no hook; pass the one it reads, e.g. --hook=blocks.1.resid_post"
    )
  if recorded and recorded != hook:
    print(f"[evaluate] note: the SAE's files name hook {recorded}; evaluating at {hook}")
  config.harvest.hook = hook
  lm = pretrained.load(config.harvest.model)
  resolve_bos(config.harvest, lm)
  check_width(sae_config, lm, hook, config.sae, config.harvest.model, recorded)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data = harvest(config, lm, workdir)
  h, e = config.harvest, config.evals
  windows = data.eval_windows[: e.splice_windows or None]
  reference = downstream.reference_losses(lm, windows, hook, h.skip_first, e.batch_size)

  def measure_row(name, encode_decode, variables) -> dict:
    measured = downstream.held_out_and_spliced(
      lm, windows, hook, encode_decode, variables, data.held_out, reference, h.skip_first,
      e.batch_size,
    )  # fmt: skip
    return {"method": name, **measured}

  row = measure_row(
    f"SAE ({sae_config.architecture})", evaluate.encode_decode(sae_config), variables
  )
  title = f"{config.sae} at {hook} of {h.model}"
  columns, density_rows = interpretability(
    config, lm, data, hook, sae_config, variables, workdir, title
  )
  probe_columns, probe_rows = (
    probes(config, lm, sae_config, variables) if _wants_probes(config) else ({}, [])
  )
  rows = [{**row, **columns, **probe_columns}]
  if e.baselines:
    k = sae_config.k if sae_config.architecture in ("topk", "batchtopk") else None
    l0 = min(k or max(1, round(row["l0"])), sae_config.d_in)
    sample = row_sources.sample(data.train, e.baseline_rows, config.seed)
    pca = baselines.pca_variables(sample, l0)
    rows.append(measure_row(f"PCA top-{l0}", baselines.pca_encode_decode, pca))
    rand_config, rand_vars = baselines.random_topk(
      sae_config.d_in, sae_config.n_latents, l0, sample.mean(0), config.seed
    )
    rows.append(measure_row(f"random TopK-{l0}", evaluate.encode_decode(rand_config), rand_vars))
  about = {
    "sae": str(config.sae),
    "source_format": metadata.get("source_format", "jaxsae"),
    "model": str(h.model),
    "hook": hook,
    "bos": bool(h.bos),
    "skip_first": int(h.skip_first),
    "tokens": len(data.held_out),
  }
  rows = [{**r, **about} for r in rows]
  if jax.process_index() == 0:
    header = (
      f"{config.sae} ({about['source_format']}, {sae_config.architecture}, "
      f"n={sae_config.n_latents}) at {hook} of {h.model}: {about['tokens']} held-out tokens"
    )
    write(workdir, rows, header, {"density.csv": density_rows, "probes.csv": probe_rows})
  return rows
