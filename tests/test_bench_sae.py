"""The SAE speed benchmark at a tiny shape: our step, the floors, SAELens, and the outputs."""

import json
import math

import pytest

from jaxsae.bench import floor, harness, loop, peers, report, sae_step
from jaxsae.errors import JaxsaeError

SHAPE = dict(d=16, n=64, k=4, batch=32)


@pytest.fixture(scope="module")
def result():
  return harness.run(["topk", "relu"], **SHAPE, repeats=1, peer=True)


def result_shell() -> dict:
  """A report without rows, as `harness.run` writes one."""
  return {k: v for k, v in harness.run([], **SHAPE, repeats=1, peer=False).items() if k != "rows"}


def _positive(value) -> bool:
  return value is not None and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_harness_times_our_step_and_its_floor(result):
  rows = {r["architecture"]: r for r in result["rows"]}
  assert set(rows) == {"topk", "relu"}
  for row in rows.values():
    for key in ("step_ms", "tokens_per_s", "floor_ms", "step_over_floor", "peak_gflops"):
      assert _positive(row[key]), (row["architecture"], key, row[key])
    assert all(math.isfinite(v) for v in row["losses"])
  assert rows["topk"]["floor_kind"] == "encoder+top_k" and rows["topk"]["k"] == 4
  assert rows["relu"]["floor_kind"] == "dense FLOPs / peak" and rows["relu"]["k"] is None
  assert rows["relu"]["dense_gflop_per_step"] == pytest.approx(10 * 32 * 16 * 64 / 1e9)
  assert result["machine"]["cpus"] >= 1 and result["machine"]["device_kind"]
  assert len(result["machine"]["load_average"]) == 2


@pytest.mark.slow
def test_saelens_peer_is_timed_in_the_same_run(result):
  for row in result["rows"]:
    assert _positive(row["saelens_tokens_per_s"]) and _positive(row["saelens_ratio"])
    assert row["target_met"] in ("yes", "no")
    assert "sae-lens 6.54" in row["saelens_note"]


@pytest.mark.slow
def test_sparsify_peer_is_timed_once_and_set_beside_topk_only(result):
  rows = {r["architecture"]: r for r in result["rows"]}
  topk, relu = rows["topk"], rows["relu"]
  assert _positive(topk["sparsify_tokens_per_s"]) and _positive(topk["sparsify_ratio"])
  ratio = topk["tokens_per_s"] / topk["sparsify_tokens_per_s"]
  assert topk["sparsify_ratio"] == pytest.approx(ratio)
  assert "eai-sparsify 1.3.3" in topk["sparsify_note"]
  assert relu["sparsify_ratio"] is None and "TopK only" in relu["sparsify_note"]


def test_sparsify_step_trains_and_refuses_other_architectures():
  out = peers.time_sparsify_step(**SHAPE, repeats=4)
  assert len(out.losses) == 5 and out.losses[-1] < out.losses[0]  # FVUs, falling.
  assert 0 < out.losses[-1] < 1.5
  assert "TopK only" in peers.sparsify_unavailable_reason("relu")


def test_saelens_step_trains():
  out = peers.time_saelens_step("topk", **SHAPE, repeats=4)
  assert all(math.isfinite(v) for v in out.losses) and len(out.losses) == 5
  assert out.losses[-1] < out.losses[0]


def test_peer_reports_why_it_cannot_run():
  assert "prolu" in peers.unavailable_reason("prolu_relu")
  assert peers.unavailable_reason("relu") is None
  with pytest.raises(RuntimeError):
    peers.time_saelens_step("prolu_ste", **SHAPE)


@pytest.mark.slow
def test_variants_change_the_config_and_skip_the_peer():
  assert sae_step.parse_spec("topk") == ("topk", {})
  architecture, overrides = sae_step.parse_spec("topk:topk_path=dense+compute_dtype=bfloat16")
  assert architecture == "topk" and overrides == {"topk_path": "dense", "compute_dtype": "bfloat16"}
  config = sae_step.bench_config(
    "topk", **SHAPE, overrides={**overrides, "dead_window_tokens": "32"}
  )
  assert (config.sae.topk_path, config.sae.compute_dtype) == ("dense", "bfloat16")
  assert config.train.dead_window_tokens == 32
  with pytest.raises(ValueError, match="unknown benchmark override"):
    sae_step.bench_config("topk", **SHAPE, overrides={"nope": "1"})
  row = harness.benchmark_architecture("topk:compute_dtype=bfloat16", **SHAPE, repeats=1)
  assert row["variant"] == "compute_dtype=bfloat16" and row["dtype"] == "bfloat16"
  assert row["saelens_ratio"] is None and row["target_met"] == "—"
  assert _positive(row["tokens_per_s"])


def test_floor_counts_and_target_verdicts():
  assert floor.dense_step_flops("gated", 2, 3, 5) == 9 * 2 * 2 * 3 * 5
  row = {"architecture": "topk", "step_over_floor": 1.2, "saelens_ratio": 9.0}
  assert harness.target_met(row) == "yes"
  assert harness.target_met({**row, "saelens_ratio": 7.0}) == "no"
  assert harness.target_met({**row, "saelens_ratio": None}) == "yes (floor only)"
  assert harness.target_met({**row, "architecture": "gated"}) == "—"
  assert harness.target_met({**row, "sparsify_ratio": 1.6}) == "yes"
  assert harness.target_met({**row, "sparsify_ratio": 1.4}) == "no"  # Behind the fastest peer.
  with pytest.raises(ValueError):
    sae_step.bench_config("topk", d=16, n=64, k=100, batch=32)


@pytest.mark.slow
def test_json_markdown_and_readme_block(result, tmp_path):
  json_path, md_path = report.write(result, tmp_path / "out")
  assert [r["architecture"] for r in json.loads(json_path.read_text())["rows"]] == ["topk", "relu"]
  md = md_path.read_text()
  assert "| topk | — | 16 | 64 | 4 | 32 | float32 |" in md and "| relu | — | 16 | 64 | — |" in md
  assert "Machine: " in md and "load average" in md

  readme = tmp_path / "README.md"
  readme.write_text(f"# x\n\n{report.START}\nold table\n{report.END}\n\n## After\n")
  report.update_readme(readme, result)
  text = readme.read_text()
  assert (
    "old table" not in text and "| topk |" in text and text.endswith(f"{report.END}\n\n## After\n")
  )
  report.update_readme(readme, result)  # Idempotent: the markers stay.
  assert text == readme.read_text()
  with pytest.raises(JaxsaeError):
    report.replace_block("no markers", "table")


@pytest.mark.slow
def test_the_loop_is_timed_in_steady_state_beside_the_step(tmp_path):
  looped = loop.time_train_loop("topk", **SHAPE, steps=40, log_every=10, workdir=tmp_path)
  assert looped.steps_timed == 30 and _positive(looped.tokens_per_s)  # Records 10 → 40.
  records = (tmp_path / "loop" / "metrics.jsonl").read_text()
  assert '"step": 40' in records and "density_histogram" in records  # The loop's statistics.
  with pytest.raises(ValueError, match="two metrics records"):
    loop.time_train_loop("topk", **SHAPE, steps=15, log_every=10)
  row = harness.benchmark_architecture("topk", **SHAPE, repeats=1, peer=False, loop=True)
  assert row["loop_overhead"] == pytest.approx(row["tokens_per_s"] / row["loop_tokens_per_s"] - 1)


@pytest.mark.slow
def test_transcoder_and_clt_steps_are_timed_beside_sparsifys_transcoder():
  assert sae_step.shape(16, {"transcode": "True"}) == sae_step.Shape(16, 16, 1)
  assert sae_step.shape(16, {"layers": "3"}) == sae_step.Shape(48, 48, 3)
  assert not sae_step.shape(16, {}).transcoder
  transcoder = harness.benchmark_architecture("topk:transcode=True", **SHAPE, repeats=1)
  assert transcoder["transcoder"] and transcoder["layers"] == 1
  assert "SAELens does not train transcoders" in transcoder["saelens_note"]
  assert "transcoder" in transcoder["sparsify_note"] and _positive(transcoder["sparsify_ratio"])
  assert transcoder["sparsify_ratio"] == pytest.approx(
    transcoder["tokens_per_s"] / transcoder["sparsify_tokens_per_s"]
  )
  assert transcoder["target"].startswith("≥ 1.5× sparsify") and transcoder["target_met"] in (
    "yes",
    "no",
  )
  clt = harness.benchmark_architecture("jumprelu:layers=2", **SHAPE, repeats=1)
  assert clt["layers"] == 2 and clt["transcoder"] and _positive(clt["tokens_per_s"])
  assert "2 per-layer TopK transcoders of n/2" in clt["sparsify_note"]
  assert all(math.isfinite(v) for v in clt["losses"]) and clt["target_met"] == "—"
  page = report.markdown({**result_shell(), "rows": [transcoder, clt]})
  assert "sparsify (jumprelu:layers=2): eai-sparsify" in page
