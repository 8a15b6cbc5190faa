"""The throughput benchmark's outputs: `throughput.json` and `throughput.md` (three tables:
forward and harvest, store reads, the sparse and dense LM steps), with the machine's line."""

from __future__ import annotations

import pathlib
from typing import Any

from jaxsae.bench import machine
from jaxsae.bench import report as report_lib

JSON_FILE, MARKDOWN_FILE = "throughput.json", "throughput.md"

HARVEST_COLUMNS = (
  ("path", "path", "{}"),
  ("hooks", "hooks", "{}"),
  ("tokens_per_s", "tokens/s", "{:,.0f}"),
  ("ratio_to_forward", "× forward", "{:.2f}"),
  ("rows_per_s", "rows/s written", "{:,.0f}"),
  ("write_mb_per_s", "MB/s written", "{:,.1f}"),
  ("spread", "spread", "{:.0%}"),
  ("target_met", "≥ 0.9 × forward", "{}"),
)
STORE_COLUMNS = (
  ("mode", "read", "{}"),
  ("rows", "rows", "{:,}"),
  ("width", "width", "{}"),
  ("dtype", "stored as", "{}"),
  ("rows_per_s", "rows/s", "{:,.0f}"),
  ("mb_per_s", "MB/s (float32 out)", "{:,.0f}"),
  ("stored_mb_per_s", "MB/s (stored)", "{:,.0f}"),
  ("spread", "spread", "{:.0%}"),
)
LM_COLUMNS = (
  ("variant", "variant", "{}"),
  ("params", "params", "{}"),
  ("step_ms", "step ms", "{:.1f}"),
  ("forward_ms", "forward ms", "{:.1f}"),
  ("backward_ms", "backward ms", "{:.1f}"),
  ("update_ms", "update ms", "{:.1f}"),
  ("projection_ms", "of which projection", "{:.1f}"),
  ("other_ms", "rest of step", "{:.1f}"),
  ("step_cpu_ms", "step CPU ms", "{:.1f}"),
  ("tokens_per_s", "tokens/s", "{:,.0f}"),
  ("spread", "spread", "{:.0%}"),
)


def machine_info() -> dict[str, Any]:
  """Where the figures come from; the load average says how busy the machine was."""
  return {**machine.info(), "load_average": machine.load_averages()}


def _lm_summary(summary: dict[str, Any]) -> str:
  if not summary:
    return ""
  met = "met" if summary["target_met"] else "missed"
  return (
    f"{summary['sparse']} / {summary['dense']} step: {summary['step_ratio']:.2f}× wall clock "
    f"({summary['step_cpu_ratio']:.2f}× CPU time; target ≤ {summary['target_ratio']}×, {met}). "
    f"Forward {summary['forward_ratio']:.2f}×, forward+backward "
    f"{summary['forward_backward_ratio']:.2f}×, update {summary['update_ratio']:.2f}×. "
    f"Activation sparsity (AbsTopK) costs {summary['activation_sparsity_ms']:.0f} ms of "
    f"forward+backward; the sparse optimizer {summary['extra_update_ms']:.0f} ms more than AdamW."
  )


def markdown(report: dict[str, Any]) -> str:
  parts = []
  s = report["settings"]
  if report.get("harvest"):
    parts += [
      f"### Harvest against the plain forward ({s['model']}, {s['windows']} windows of "
      f"{s['seq_len']}, batch {s['batch_size']}, {s['store_dtype']} store)",
      report_lib.table(report["harvest"], HARVEST_COLUMNS),
    ]
  if report.get("store"):
    parts += ["### Store reads", report_lib.table(report["store"], STORE_COLUMNS)]
  lm = report.get("lm_step")
  if lm:
    row = lm["rows"][0]
    parts += [
      f"### Weight-sparse LM train step against its dense twin (batch {row['batch']} × "
      f"{row['seq_len']}, step at {lm['step_fraction']:.0%} of training)",
      report_lib.table(lm["rows"], LM_COLUMNS),
      _lm_summary(lm["summary"]),
    ]
  m = report["machine"]
  load = m.get("load_average") or [None]
  busy = "" if load[0] is None else f", load average {load[0]:.1f}"
  parts.append(
    f"Machine: {report['date']}, {m['platform']} ({m['cpus']} usable CPUs{busy}); jax "
    f"{m['jax']} on {m['devices']} × {m['device_kind']}; wall-clock medians of "
    f"{s['repeats']} round-robin repeats after a warm-up; spread = (max − min) / median."
  )
  return "\n\n".join(p for p in parts if p) + "\n"


def write(report: dict[str, Any], out_dir: str | pathlib.Path) -> tuple[pathlib.Path, ...]:
  """Write throughput.json and throughput.md into `out_dir`; return their paths."""
  return report_lib.write_outputs(report, out_dir, JSON_FILE, MARKDOWN_FILE, markdown(report))
