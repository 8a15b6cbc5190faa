"""The SmoothQuant study: channel statistics and W8A8 loss for one or more models.

For each model: calibrate on training-split windows (channel_stats), write the outlier table
and figure, then score the test split in float, naive W8A8 and smoothed W8A8 over α for each
activation mode. Models with AbsTopK activation sparsity get naive W8A8 only (smoothing would
change which entries are kept). Writes <workdir>/<model>/{channel_stats.safetensors,
outliers.md, outliers.csv, outliers.png} and <workdir>/{w8a8.md, w8a8.csv, w8a8.jsonl,
w8a8_summary.md, w8a8.png}.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import re

import jax
import ml_collections

from jaxsae import config_check, run_log, tables
from jaxsae.errors import JaxsaeError
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import pretrained
from jaxsae.quant import fake_quant, report, smoothing
from jaxsae.quant import stats as stats_lib
from jaxsae.quant.w8a8 import Evaluator
from jaxsae.text import model_corpus, pipeline


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.models = "default,dense,sparse"  # Comma-separated: shipped names, model folders, "gpt2".
  c.corpus = "stdlib"
  c.pattern = "**/*.py"
  c.seq_len = 256  # Tokens per window (capped at each model's max_len).
  c.bos = False  # Begin every window with the model's BOS (counted in seq_len; Gemma needs it).
  c.calibration_windows = 64  # Training-split windows for the statistics (SmoothQuant: 512).
  c.eval_windows = 256  # Test-split windows scored per scheme (0: the whole split).
  c.batch_size = 16
  c.percentile_rows = 16384  # Tokens per input kept for the percentiles (max uses all).
  c.alphas = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
  c.activation_modes = ("per_token", "per_tensor", "per_tensor_static")
  c.weights = "per_channel"  # "per_channel" | "per_tensor".
  c.smooth_sites = ("attn.in", "mlp.in")  # Add "attn.z" to fold into W_V as well.
  # A float-equivalent copy of these models with one attn.in channel made `factor` times larger
  # in every layer (smoothing.with_outlier_channel): the outlier regime of large models, at
  # our scale. "" for none.
  c.outlier = ml_collections.ConfigDict(dict(models="default", channel=17, factor=40.0))
  c.seed = 0
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  def values(c, p):
    config_check.require(
      bool(model_names(c)), p, "models is empty; name at least one, e.g. default"
    )
    for name in ("seq_len", "calibration_windows", "batch_size", "percentile_rows"):
      config_check.require(c[name] >= 1, p, f"{name}={c[name]} must be at least 1")
    config_check.require(
      c.seq_len >= 2 + c.bos, p, f"seq_len={c.seq_len} must be at least {2 + c.bos}"
    )
    config_check.require(c.eval_windows >= 0, p, f"eval_windows={c.eval_windows} must be ≥ 0")
    for alpha in c.alphas:
      config_check.require(0 <= alpha <= 1, p, f"alphas: {alpha} is outside [0, 1]")
    for mode in c.activation_modes:
      config_check.require_choice(mode, fake_quant.ACTIVATION_MODES, "activation_modes", p)
    config_check.require_choice(c.weights, fake_quant.WEIGHT_MODES, "weights", p)
    config_check.require(c.outlier.factor > 0, p, f"outlier.factor={c.outlier.factor} must be > 0")
    config_check.require(c.outlier.channel >= 0, p, f"outlier.channel={c.outlier.channel} < 0")
    for site in c.smooth_sites:
      config_check.require_choice(site, tuple(smoothing.FOLDABLE), "smooth_sites", p)

  config_check.validate(config, base_config(), [values])


def _names(listed: str) -> list[str]:
  return [m.strip() for m in str(listed).split(",") if m.strip()]


def model_names(config) -> list[str]:
  return _names(config.models)


def slug(name: str) -> str:
  """A directory name for a model name or path."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", pathlib.Path(name).name or name) or "model"


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Statistics, figures and the W8A8 sweep for every model; returns the sweep's rows."""
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  rows: list[dict] = []
  lead = jax.process_index() == 0  # Every process computes; one writes.
  with open(workdir / "w8a8.jsonl", "w", encoding="utf-8") if lead else io.StringIO() as log:
    for name in model_names(config):
      rows += _study_model(config, name, workdir, log)
    for name in _names(config.outlier.models):
      rows += _study_model(config, name, workdir, log, outlier=True)
  if lead:
    write_report(workdir)
  return rows


def write_report(workdir: str | pathlib.Path) -> list[pathlib.Path]:
  """Tables and figures from what `run` left in the workdir (w8a8.jsonl and each model's
  channel_stats.safetensors), so they can be rebuilt without recomputing; returns the files."""
  workdir = pathlib.Path(workdir)
  jsonl = workdir / "w8a8.jsonl"
  if not jsonl.is_file():
    raise JaxsaeError(f"no W8A8 results at {jsonl}; run the study first")
  rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line]
  shown = [{**r, "alpha": "" if r["alpha"] == "" else f"{r['alpha']:g}"} for r in rows]
  written = [workdir / n for n in ("w8a8.csv", "w8a8.md", "w8a8_summary.md", "w8a8.png")]
  tables.write_csv(written[0], rows, report.COLUMNS + ("tokens",))
  written[1].write_text(tables.markdown(shown, report.COLUMNS, digits=5) + "\n")
  written[2].write_text(tables.markdown(report.best_rows(shown), report.COLUMNS, digits=5) + "\n")
  report.sweep_figure(rows).savefig(written[3], dpi=120)
  for stats_file in sorted(workdir.glob("*/channel_stats.safetensors")):
    out = stats_file.parent
    stats = stats_lib.ChannelStats.load(stats_file)
    n_layers = 1 + max(
      layer for layer, _ in map(hooks_lib.parse, stats.hooks()) if layer is not None
    )
    outliers = stats_lib.outlier_rows(stats)
    tables.write_csv(out / "outliers.csv", outliers)
    (out / "outliers.md").write_text(tables.markdown(outliers, digits=3) + "\n")
    report.outlier_figure(stats, n_layers).savefig(out / "outliers.png", dpi=110)
    written += [out / "outliers.csv", out / "outliers.md", out / "outliers.png"]
  return written


def _study_model(config, name, workdir: pathlib.Path, log, outlier=False) -> list[dict]:
  lm = pretrained.load(name)
  # Calibrated on the model's training split, scored on its test split.
  corpus = model_corpus.for_model(lm, {"corpus": config.corpus, "pattern": config.pattern})
  if outlier:
    o = config.outlier
    params = smoothing.with_outlier_channel(lm.params, lm.config, o.channel, o.factor)
    lm = dataclasses.replace(lm, params=params)
    name = f"{name}+outlier{o.channel}×{o.factor:g}"
  seq_len = min(config.seq_len, lm.config.max_len)
  out = workdir / slug(name)
  out.mkdir(parents=True, exist_ok=True)
  train = pipeline.load_windows(corpus, "train", lm.tokenizer, seq_len, config.bos)
  calibration = pipeline.sample_windows(train, config.calibration_windows, config.seed, "train")
  stats = stats_lib.channel_stats(
    lm, calibration[:, :-1], batch_size=config.batch_size, max_rows=config.percentile_rows
  )
  if jax.process_index() == 0:
    stats.save(out / "channel_stats.safetensors")

  test = pipeline.load_windows(corpus, "test", lm.tokenizer, seq_len, config.bos)
  n_eval = len(test) if config.eval_windows == 0 else min(config.eval_windows, len(test))
  evaluator = Evaluator(lm, test, stats, batch_size=config.batch_size, max_sequences=n_eval)
  alphas = tuple(config.alphas)
  if lm.config.activation_topk_fraction > 0:
    print(f"{name}: AbsTopK activation sparsity; naive W8A8 only (smoothing is not exact)")
    alphas = ()
  n_schemes = 1 + len(config.activation_modes) * (1 + len(alphas))
  bar = run_log.progress(n_schemes * n_eval * seq_len, desc=f"W8A8 {slug(name)}")

  def on_row(row):
    log.write(json.dumps(row) + "\n")
    log.flush()
    bar.update(row["tokens"])

  try:
    rows = report.sweep(
      evaluator,
      name,
      alphas,
      tuple(config.activation_modes),
      config.weights,
      tuple(config.smooth_sites),
      on_row=on_row,
    )
  finally:
    bar.close()
  return rows
