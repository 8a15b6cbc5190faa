"""JSONL and TensorBoard records, and the token-counting progress bar."""

import math
import struct

from tensorboardX.proto import event_pb2

from jaxsae import run_log, tables


def _events(path):
  """Parse a TFRecord file of tf.Event protos (length, crc, data, crc)."""
  data, events, i = path.read_bytes(), [], 0
  while i < len(data):
    (length,) = struct.unpack("<Q", data[i : i + 8])
    events.append(event_pb2.Event.FromString(data[i + 12 : i + 12 + length]))
    i += 12 + length + 4
  return events


def test_jsonl_and_tensorboard_hold_the_same_scalars(tmp_path):
  with run_log.RunLog(tmp_path) as log:
    log.write(1, {"loss": 2.5, "lr": 1e-3})
    log.write(2, {"loss": float("nan")}, split="validation")
  records = run_log.read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "validation")]
  assert records[0]["loss"] == 2.5 and records[1]["loss"] == "nan"
  assert run_log.read_jsonl(tmp_path / "metrics.jsonl", "validation") == records[1:]
  (event_file,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  scalars = {(v.tag, e.step): v.simple_value for e in _events(event_file) for v in e.summary.value}
  assert scalars[("train/loss", 1)] == 2.5
  assert math.isclose(scalars[("train/lr", 1)], 1e-3, rel_tol=1e-6)
  assert math.isnan(scalars[("validation/loss", 2)])


def test_a_resumed_run_drops_the_records_it_will_write_again(tmp_path):
  with run_log.RunLog(tmp_path, tensorboard=False) as log:
    for step in (10, 20, 30):
      log.write(step, {"loss": float(step)})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "split": "tr')  # Killed mid-write.
  with run_log.RunLog(tmp_path, tensorboard=False, resume_from=20) as log:  # Checkpoint at 20.
    log.write(30, {"loss": 31.0})
  records = run_log.read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["loss"]) for r in records] == [(10, 10.0), (20, 20.0), (30, 31.0)]


def test_progress_bar_counts_tokens(capsys):
  bar = run_log.progress(1000, 200)
  bar.update(300)
  assert bar.n == 500 and bar.unit == "tok"
  bar.close()
  assert "tok" in capsys.readouterr().err


def test_tables_render_markdown_and_csv(tmp_path):
  rows = [{"model": "a", "loss": 1.23456}, {"model": "b", "loss": 2.0}]
  assert tables.markdown(rows).splitlines() == [
    "| model | loss |",
    "|---|---|",
    "| a | 1.2346 |",
    "| b | 2.0000 |",
  ]
  tables.write_csv(tmp_path / "t.csv", rows)
  assert (tmp_path / "t.csv").read_text().splitlines() == ["model,loss", "a,1.23456", "b,2.0"]
