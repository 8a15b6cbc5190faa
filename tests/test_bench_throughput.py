"""The throughput benchmark at tiny shapes: every measurement runs and gives positive, finite
figures, and the report holds its three tables."""

import json
import math

import numpy as np
import pytest

from conftest import load_config
from jaxsae.bench import lm_step, throughput, throughput_report
from jaxsae.models import pretrained

pytestmark = pytest.mark.slow  # Whole benchmark runs: the fast tier (-m "not slow") skips them.


def _positive(row, keys):
  for key in keys:
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)


@pytest.fixture(scope="module")
def harvest_rows():
  lm = pretrained.load("default")
  windows = np.random.default_rng(0).integers(0, 256, (4, 16)).astype(np.int32)
  hook_sets = {"one": ["blocks.0.resid_post"], "two": ["blocks.0.resid_post", "blocks.1.mlp.out"]}
  return throughput.harvest_paths(lm, windows, hook_sets, batch_size=2, chunk_rows=16, repeats=1)


def test_forward_capture_and_harvest_throughput(harvest_rows):
  assert [(r["path"], r["hooks"]) for r in harvest_rows] == [
    ("forward", "—"),
    ("capture", "one"),
    ("harvest", "one"),
    ("capture", "two"),
    ("harvest", "two"),
  ]
  for row in harvest_rows:
    _positive(row, ["tokens_per_s", "ratio_to_forward", "seconds"])
    assert row["tokens"] == 64
  assert harvest_rows[0]["ratio_to_forward"] == 1.0
  for row in harvest_rows[2::2]:
    _positive(row, ["rows_per_s", "write_mb_per_s"])
    assert isinstance(row["target_met"], bool)


def test_store_reads_sequential_and_shuffled(tmp_path):
  rows = throughput.store_throughput(
    512, 8, chunk_rows=128, batch_size=64, repeats=1, tmp_root=tmp_path
  )
  assert [r["mode"] for r in rows] == ["sequential chunks", "shuffled batches of 64"]
  for row in rows:
    _positive(row, ["rows_per_s", "mb_per_s", "stored_mb_per_s", "seconds"])
    assert row["rows"] == 512
  assert not list(tmp_path.iterdir())  # The temporary store is gone.


def _tiny(variant):
  c = load_config("lm_sparse", variant)
  c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.d_mlp = 32, 1, 2, 128
  c.data.seq_len = 16
  c.sparsity.hidden_fraction = 1 / 4
  c.sparsity.min_per_neuron = 1
  return c


@pytest.fixture(scope="module")
def lm_result():
  configs = {"sparse": _tiny("sparse"), "dense": _tiny("dense")}
  tokens = np.random.default_rng(1).integers(0, 257, (2, 17)).astype(np.int32)
  return lm_step.compare(configs, tokens, repeats=1, warmup=1)


def test_sparse_and_dense_lm_steps_and_their_breakdown(lm_result):
  sparse, dense = lm_result["rows"]
  assert (sparse["variant"], dense["variant"]) == ("sparse", "dense")
  assert sparse["weight_sparse"] and not dense["weight_sparse"]
  for row in (sparse, dense):
    _positive(row, ["step_ms", "forward_ms", "forward_backward_ms", "update_ms", "tokens_per_s"])
    assert row["params"] == "random" and row["batch"] == 2 and row["seq_len"] == 16
  _positive(sparse, ["projection_ms"])
  assert dense["projection_ms"] is None
  summary = lm_result["summary"]
  _positive(summary, ["step_ratio", "step_cpu_ratio", "forward_ratio", "update_ratio"])
  assert summary["target_met"] == (summary["step_ratio"] <= lm_step.TARGET_RATIO)


def test_report_writes_json_and_markdown(harvest_rows, lm_result, tmp_path):
  report = {
    "date": "today",
    "machine": throughput_report.machine_info(),
    "settings": {
      "model": "default",
      "windows": 4,
      "seq_len": 16,
      "batch_size": 2,
      "store_dtype": "float32",
      "repeats": 1,
    },
    "harvest": harvest_rows,
    "store": throughput.store_throughput(256, 4, chunk_rows=64, batch_size=64, repeats=1),
    "lm_step": lm_result,
  }
  json_path, md_path = throughput_report.write(report, tmp_path / "out")
  assert json.loads(json_path.read_text())["lm_step"]["summary"]["dense"] == "dense"
  text = md_path.read_text()
  for heading in ("### Harvest", "### Store reads", "### Weight-sparse LM train step"):
    assert heading in text
  assert "sparse / dense step:" in text and "Machine:" in text
