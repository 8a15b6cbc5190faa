"""Training-store precision: what a bfloat16 or an int8 activation store costs the SAE.

`run` trains the main job (jaxsae.main_job) once per training-store dtype in <workdir>/<dtype>,
same seed and windows, with the held-out store float32 in every run; the rows give the training
store's bytes on disk (acts/ and scales/) and saving against float32, its quantization error
(`store_fvu`: Σ‖x̂ − x‖² / Σ‖x − x̄‖² of the decoded store against the float32 store), and the
SAE's held-out FVU and ΔCE, with their differences from the float32 run.
"""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib.figure import Figure

from jaxsae import main_job, tables
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import JaxsaeError

COLUMNS = {  # CSV key: markdown header.
  "dtype": "store dtype",
  "store_bytes": "training-store bytes",
  "saving": "saving vs float32",
  "store_fvu": "store quantization FVU",
  "sae_fvu": "SAE FVU (held-out)",
  "sae_fvu_diff": "Δ SAE FVU vs float32",
  "delta_ce": "ΔCE (nats)",
  "delta_ce_diff": "Δ ΔCE vs float32",
}


def dtypes_of(config) -> list[str]:
  dtypes = [d.strip() for d in config.dtypes.split(",") if d.strip()]
  bad = [d for d in dtypes if d not in main_job.STORE_DTYPES]
  if bad or "float32" not in dtypes or len(set(dtypes)) != len(dtypes):
    raise JaxsaeError(
      f"dtypes={config.dtypes!r}: list distinct store dtypes of {main_job.STORE_DTYPES}, "
      "float32 (the reference) among them"
    )
  if config.main.harvest.streaming:
    raise JaxsaeError("main.harvest.streaming=True keeps no training store to compare")
  return ["float32"] + [d for d in dtypes if d != "float32"]


def store_fvu(store: ActivationStore, reference: ActivationStore, hook: str) -> float:
  """Σ‖x̂ − x‖² / Σ‖x − x̄‖² of `store`'s decoded rows x̂ against `reference`'s rows x."""
  if not np.array_equal(store.rows_table(), reference.rows_table()):
    raise JaxsaeError(f"{store.directory} and {reference.directory} hold different rows")
  error = total = 0.0
  first = np.zeros(reference.width(hook))
  for start in range(0, reference.n_rows, reference.chunk_rows):
    stop = min(start + reference.chunk_rows, reference.n_rows)
    x = reference.read_rows(hook, start, stop).astype(np.float64)
    x_hat = store.read_rows(hook, start, stop).astype(np.float64)
    error += float(np.sum((x_hat - x) ** 2))
    total += float(np.sum(x**2))
    first += x.sum(0)
  variance = total - float(np.sum(first**2)) / reference.n_rows
  return error / variance


def run(config, workdir: str | pathlib.Path) -> list[dict]:
  """Run the main job per dtype; return the table's rows (float32 first)."""
  workdir = pathlib.Path(workdir)
  dtypes = dtypes_of(config)
  hook = config.main.harvest.hook
  sae = {}
  for dtype in dtypes:
    job = config.main.copy_and_resolve_references()
    job.harvest.dtype = dtype
    print(f"== main job, {dtype} training store: {workdir / dtype}", flush=True)
    sae[dtype] = main_job.run(job, workdir / dtype)[0]
  stores = {d: ActivationStore.open(workdir / d / "store_train") for d in dtypes}
  reference = stores["float32"]
  rows = []
  for dtype in dtypes:
    size = stores[dtype].stored_bytes()
    rows.append(
      {
        "dtype": dtype,
        "store_bytes": size,
        "saving": reference.stored_bytes() / size,
        "store_fvu": store_fvu(stores[dtype], reference, hook),
        "sae_fvu": sae[dtype]["fvu"],
        "sae_fvu_diff": sae[dtype]["fvu"] - sae["float32"]["fvu"],
        "delta_ce": sae[dtype]["delta_ce"],
        "delta_ce_diff": sae[dtype]["delta_ce"] - sae["float32"]["delta_ce"],
      }
    )
  return rows


def markdown(rows: list[dict]) -> str:
  shown = [
    {
      COLUMNS["dtype"]: r["dtype"],
      COLUMNS["store_bytes"]: f"{r['store_bytes']:,}",
      COLUMNS["saving"]: f"{r['saving']:.2f}×",
      COLUMNS["store_fvu"]: f"{r['store_fvu']:.2e}",
      COLUMNS["sae_fvu"]: f"{r['sae_fvu']:.4f}",
      COLUMNS["sae_fvu_diff"]: f"{r['sae_fvu_diff']:+.4f}",
      COLUMNS["delta_ce"]: f"{r['delta_ce']:.4f}",
      COLUMNS["delta_ce_diff"]: f"{r['delta_ce_diff']:+.4f}",
    }
    for r in rows
  ]
  return tables.markdown(shown, list(COLUMNS.values()))


def plot(rows: list[dict], path: pathlib.Path) -> pathlib.Path:
  """Bars per dtype: store size, store quantization FVU, SAE FVU, ΔCE."""
  fig = Figure(figsize=(13, 3.4))
  axes = fig.subplots(1, 4)
  names = [r["dtype"] for r in rows]
  colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"][: len(rows)]
  panels = (
    ("store_bytes", "training store (MB on disk)", 1e-6, "{:.1f}"),
    ("store_fvu", "store quantization FVU", 1, "{:.1e}"),
    ("sae_fvu", "SAE FVU (held-out)", 1, "{:.4f}"),
    ("delta_ce", "ΔCE of the spliced SAE (nats)", 1, "{:.4f}"),
  )
  for ax, (key, title, factor, fmt) in zip(axes, panels, strict=True):
    values = [r[key] * factor for r in rows]
    bars = ax.bar(names, values, color=colors)
    ax.bar_label(bars, [fmt.format(v) for v in values], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)
  fig.suptitle("Training-store precision (held-out store float32 in every run)", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path
