"""A finished fault-test job's result: a trainer's final train state, saved leaf by leaf as raw
bytes (`save_final`, exact for every dtype, bfloat16 included) and read back (`load_final`), and
the bitwise comparison of two finished jobs (`compare`; a harvest's whole store with
`compare_stores`)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

TRAINERS = ("lm", "sae")
FINAL = "final.npz"  # The finished job's train state, leaf by leaf (trainers).


def _flat_state(state) -> dict[str, np.ndarray]:
  import jax

  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_final(workdir: pathlib.Path, state) -> None:
  """Every leaf as raw bytes, with its dtype and shape: reloaded exactly, bfloat16 included."""
  flat = _flat_state(state)
  layout = {k: [str(v.dtype), list(v.shape)] for k, v in flat.items()}
  raw = {k: np.ascontiguousarray(v).reshape(-1).view(np.uint8) for k, v in flat.items()}
  tmp = workdir / (FINAL + ".tmp.npz")
  np.savez(tmp, __layout__=np.asarray(json.dumps(layout)), **raw)
  os.replace(tmp, workdir / FINAL)


def load_final(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """{leaf path: array} of a finished trainer job, with its exact dtype."""
  import ml_dtypes

  with np.load(workdir / FINAL, allow_pickle=False) as f:
    layout = json.loads(str(f["__layout__"]))
    out = {}
    for key, (dtype, shape) in layout.items():
      dt = np.dtype(getattr(ml_dtypes, dtype)) if hasattr(ml_dtypes, dtype) else np.dtype(dtype)
      out[key] = f[key].view(dt).reshape(shape)
    return out


def _bitwise_mismatches(label: str, a: np.ndarray, b: np.ndarray) -> list[str]:
  if a.dtype != b.dtype or a.shape != b.shape:
    return [f"{label}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"]
  if a.tobytes() == b.tobytes():
    return []
  diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
  return [f"{label}: {int(np.sum(a != b))} of {a.size} values differ (max |Δ| {diff.max():.3g})"]


def compare(kind: str, reference: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  """What differs between two finished jobs' results (empty: bitwise identical)."""
  if kind in TRAINERS:
    a, b = load_final(reference), load_final(workdir)
    problems = [f"leaf {k} only in one run" for k in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
      problems += _bitwise_mismatches(key, a[key], b[key])
    return problems
  return compare_stores(reference / "store", workdir / "store")


def _store_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
  return {
    str(p.relative_to(root)): p
    for sub in ("acts", "scales", "rows", "windows")
    for p in (root / sub).rglob("*")
    if p.is_file()
  }


def compare_stores(reference: pathlib.Path, store_dir: pathlib.Path) -> list[str]:
  """Every row of every hook, the rows table, the windows and store.json, and the chunk files
  byte for byte."""
  from jaxsae.activations.store import ActivationStore

  a, b = ActivationStore.open(reference), ActivationStore.open(store_dir)
  problems = [
    f"store.json {k}: {a.meta.get(k)!r} vs {b.meta.get(k)!r}"
    for k in sorted(set(a.meta) | set(b.meta))
    if a.meta.get(k) != b.meta.get(k)
  ]
  if any(a.meta[k] != b.meta.get(k) for k in ("hooks", "n_rows", "dtype")):
    return problems  # Not the same arrays: nothing more to compare.
  for hook in a.hooks:  # Raw, in the stored dtype (an int8 store's codes, and its scales).
    rows_a, rows_b = (np.asarray(s.array(hook).read().result()) for s in (a, b))
    problems += _bitwise_mismatches(f"acts/{hook}", rows_a, rows_b)
    if a.quantized:
      scales_a, scales_b = (np.asarray(s.scales_array(hook).read().result()) for s in (a, b))
      problems += _bitwise_mismatches(f"scales/{hook}", scales_a, scales_b)
  problems += _bitwise_mismatches("rows", a.rows_table(), b.rows_table())
  problems += _bitwise_mismatches("windows", a.windows(), b.windows())
  files_a, files_b = _store_files(reference), _store_files(store_dir)
  problems += [f"file {k} only in one store" for k in sorted(set(files_a) ^ set(files_b))]
  problems += [
    f"file {k} differs"
    for k in sorted(set(files_a) & set(files_b))
    if files_a[k].read_bytes() != files_b[k].read_bytes()
  ]
  return problems
