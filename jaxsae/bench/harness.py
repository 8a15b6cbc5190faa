"""One benchmark run: per architecture, our step, its floor and the peers (SAELens; sparsify
for TopK, timed once per run and set beside every TopK row, variants included), as rows.

Targets (benchmarks, not tests), at d=768, n=16384, k=32, B=4096, float32: TopK ≥ 8× SAELens
and ≥ 1.5× sparsify tokens/s with a step ≤ 1.25× the floor (encoder + top-k); ReLU ≥ 1× SAELens
and ≥ 85% of the measured matmul peak (a step ≤ 1/0.85 of the dense floor).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from jaxsae.bench import floor as floor_lib
from jaxsae.bench import loop as loop_lib
from jaxsae.bench import machine, peers, sae_step


@dataclasses.dataclass(frozen=True)
class Target:
  min_peer_ratio: float | None  # Our tokens/s over SAELens's (None: not a target).
  max_step_over_floor: float | None
  text: str
  min_sparsify_ratio: float | None = None  # Our tokens/s over sparsify's.


TARGETS = {
  "topk": Target(8.0, 1.25, "≥ 8× SAELens, ≥ 1.5× sparsify, ≤ 1.25× floor", 1.5),
  "relu": Target(1.0, 1 / 0.85, "≥ 1× SAELens, ≥ 85% of matmul peak"),
}
# A one-site transcoder's step (any variant) against sparsify's transcoder.
TRANSCODER_TARGET = Target(None, None, "≥ 1.5× sparsify's transcoder", 1.5)


def load_average() -> float | None:
  """The 1-minute load average: other work on the machine makes every figure noisier."""
  averages = machine.load_averages()
  return averages[0] if averages else None


def target_for(row: dict[str, Any]) -> Target | None:
  """A one-site transcoder's `TRANSCODER_TARGET`, else the plain architecture's (variants and
  CLTs have none)."""
  if row.get("transcoder"):
    return TRANSCODER_TARGET if row.get("layers") == 1 else None
  return None if row.get("variant") else TARGETS.get(row["architecture"])


def target_met(row: dict[str, Any]) -> str:
  """Whether `row` meets its target: yes/no, "(floor only)" without SAELens where the target
  names it, "—" for none (or without sparsify where it is the only peer named)."""
  target = target_for(row)
  if target is None:
    return "—"
  ok = target.max_step_over_floor is None or row["step_over_floor"] <= target.max_step_over_floor
  if target.min_peer_ratio is not None:
    if row["saelens_ratio"] is None:
      return ("yes" if ok else "no") + " (floor only)"
    ok = ok and row["saelens_ratio"] >= target.min_peer_ratio
  sparsify_ratio = row.get("sparsify_ratio")
  if target.min_sparsify_ratio is not None and sparsify_ratio is not None:
    ok = ok and sparsify_ratio >= target.min_sparsify_ratio
  elif target.min_peer_ratio is None:
    return "—"  # sparsify was the target and did not run.
  return "yes" if ok else "no"


def benchmark_architecture(
  spec: str,
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  repeats: int = 5,
  peer: bool = True,
  peak: floor_lib.Peak | None = None,
  mesh=None,
  sparsify_timing: peers.PeerResult | None = None,
  loop: bool = False,
) -> dict[str, Any]:
  """One row: our step, its floor and (if `peer` and installed) the peers, all at one shape.

  `spec` is an architecture, or a variant of one (`sae_step.parse_spec`: "topk:topk_path=dense");
  SAELens runs only for the plain architectures (a variant is compared with its floor). Every
  TopK row gets sparsify's step (`sparsify_timing`, else timed here). With `loop`, also the
  trainer's own loop (`bench.loop`) and what it adds to the step."""
  architecture, overrides = sae_step.parse_spec(spec)
  widths = sae_step.shape(d, overrides)
  if widths.d_in != d:  # A CLT: its floor is that of its full width.
    peak = floor_lib.matmul_peak(batch, widths.d_in, n, repeats)
  peak = peak or floor_lib.matmul_peak(batch, d, n, repeats)
  ours = sae_step.time_train_step(
    architecture, d=d, n=n, k=k, batch=batch, repeats=repeats, mesh=mesh, overrides=overrides
  )
  fl = floor_lib.floor(
    architecture, d=widths.d_in, n=n, k=k, batch=batch, repeats=repeats, peak=peak
  )
  row = {
    "architecture": architecture,
    "variant": "+".join(f"{key}={value}" for key, value in overrides.items()),
    "d": d,
    "layers": widths.layers,
    "transcoder": widths.transcoder,
    "n": n,
    "k": k if architecture in sae_step.K_ARCHITECTURES else None,
    "batch": batch,
    "dtype": overrides.get("compute_dtype", "float32"),
    "devices": ours.devices,
    "step_ms": ours.seconds * 1e3,
    "step_spread": ours.timing.spread,
    "tokens_per_s": ours.tokens_per_s,
    "losses": list(ours.losses),
    "floor_kind": fl.kind,
    "floor_ms": fl.seconds * 1e3,
    "step_over_floor": ours.seconds / fl.seconds,
    "peak_gflops": fl.peak_flops_per_s / 1e9,
    "dense_gflop_per_step": fl.dense_flops / 1e9,
    # Share of the matmul peak the step's dense FLOPs run at (dense floors only).
    "peak_fraction": None if architecture in floor_lib.TOPK_FLOOR else fl.seconds / ours.seconds,
    "saelens_step_ms": None,
    "saelens_tokens_per_s": None,
    "saelens_ratio": None,
    "saelens_losses": None,
    "saelens_note": "",
  }
  reason = "not requested (--peer=False)" if not peer else peers.unavailable_reason(architecture)
  if widths.transcoder and not reason:
    reason = "SAELens does not train transcoders"
  if overrides and not reason:
    reason = "not run for variants"
  if reason:
    row["saelens_note"] = reason
  else:
    theirs = peers.time_saelens_step(architecture, d=d, n=n, k=k, batch=batch, repeats=repeats)
    row.update(
      saelens_step_ms=theirs.seconds * 1e3,
      saelens_tokens_per_s=theirs.tokens_per_s,
      saelens_ratio=ours.tokens_per_s / theirs.tokens_per_s,
      saelens_losses=list(theirs.losses),
      saelens_note=f"sae-lens {theirs.version}, torch {theirs.threads} threads",
    )
  row["loop_tokens_per_s"] = row["loop_overhead"] = None
  if loop and not widths.transcoder:
    looped = loop_lib.time_train_loop(architecture, d=d, n=n, k=k, batch=batch, overrides=overrides)
    row["loop_tokens_per_s"] = looped.tokens_per_s
    row["loop_overhead"] = ours.tokens_per_s / looped.tokens_per_s - 1
  row.update(
    _sparsify_columns(architecture, widths, ours, peer, sparsify_timing, d, n, k, batch, repeats)
  )
  target = target_for(row)
  row["target"] = target.text if target else ""
  row["target_met"] = target_met(row)
  return row


def _sparsify_columns(architecture, widths, ours, peer, timing, d, n, k, batch, repeats) -> dict:
  """sparsify beside a row: its TopK step beside a TopK row (`timing`, else timed here), its
  transcoder beside a transcoder row, and beside a CLT over L layers its L per-layer
  transcoders (it has no CLT) of n/L latents and k/L active each, L steps per batch."""
  kind = "topk" if widths.transcoder else architecture
  reason = "not requested (--peer=False)" if not peer else peers.sparsify_unavailable_reason(kind)
  if reason:
    columns = ("sparsify_step_ms", "sparsify_tokens_per_s", "sparsify_ratio", "sparsify_losses")
    return {**dict.fromkeys(columns), "sparsify_note": reason}
  L, what = widths.layers, ""
  if widths.transcoder:
    timing = peers.time_sparsify_step(
      d=d, n=n // L, k=max(1, k // L), batch=batch, repeats=repeats, transcode=True
    )
    what = " transcoder" if L == 1 else f" {L} per-layer TopK transcoders of n/{L}"
  timing = timing or peers.time_sparsify_step(d=d, n=n, k=k, batch=batch, repeats=repeats)
  tokens_per_s = timing.tokens_per_s / L
  return {
    "sparsify_step_ms": timing.seconds * L * 1e3,
    "sparsify_tokens_per_s": tokens_per_s,
    "sparsify_ratio": ours.tokens_per_s / tokens_per_s,
    "sparsify_losses": list(timing.losses),
    "sparsify_note": f"eai-sparsify {timing.version}{what}, Adam, torch {timing.threads} threads",
  }


def run(
  architectures: Sequence[str],
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  repeats: int = 5,
  peer: bool = True,
  loop: bool = False,
  log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
  """{"machine", "date", "settings", "rows"}: every architecture at one shape."""
  load_before = load_average()
  peak = floor_lib.matmul_peak(batch, d, n, repeats)
  log(f"matmul peak {peak.flops_per_s / 1e9:.1f} GFLOP/s ({peak.timing.seconds * 1e3:.1f} ms)")
  sparsify_timing = None  # One sparsify measurement per run, beside every TopK row.
  if peer and not peers.sparsify_unavailable_reason("topk"):
    if any(sae_step.parse_spec(spec)[0] == "topk" for spec in architectures):
      sparsify_timing = peers.time_sparsify_step(d=d, n=n, k=k, batch=batch, repeats=repeats)
      log(f"sparsify: {sparsify_timing.tokens_per_s:.0f} tokens/s")
  rows = []
  for spec in architectures:
    row = benchmark_architecture(
      spec, d=d, n=n, k=k, batch=batch, repeats=repeats, peer=peer, peak=peak,
      sparsify_timing=sparsify_timing, loop=loop,
    )  # fmt: skip
    log(
      f"{spec}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
      f"{row['step_over_floor']:.2f}x floor; SAELens "
      + (f"{row['saelens_tokens_per_s']:.0f} tokens/s" if row["saelens_ratio"] else "n/a")
    )
    rows.append(row)
  return {
    "machine": {**machine.info(), "load_average": [load_before, load_average()]},
    "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
    "settings": {"repeats": repeats, "timing": "median of repeats after one warm-up step"},
    "rows": rows,
  }
