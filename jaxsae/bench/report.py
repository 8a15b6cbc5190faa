"""The benchmark's outputs: JSON, a markdown table, and the README's table between markers."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from jaxsae import tables
from jaxsae.errors import JaxsaeError

START, END = "<!-- bench:sae -->", "<!-- /bench:sae -->"
JSON_FILE, MARKDOWN_FILE = "sae_bench.json", "sae_bench.md"

# (row key, column header, format) of the markdown table.
COLUMNS = (
  ("architecture", "architecture", "{}"),
  ("variant", "variant", "{}"),
  ("d", "d", "{}"),
  ("n", "n", "{}"),
  ("k", "k", "{}"),
  ("batch", "batch", "{}"),
  ("dtype", "dtype", "{}"),
  ("step_ms", "ms/step", "{:.1f}"),
  ("tokens_per_s", "tokens/s", "{:,.0f}"),
  ("floor_kind", "floor", "{}"),
  ("floor_ms", "floor ms", "{:.1f}"),
  ("step_over_floor", "step/floor", "{:.2f}"),
  ("peak_fraction", "% matmul peak", "{:.0%}"),
  ("saelens_tokens_per_s", "SAELens tokens/s", "{:,.0f}"),
  ("saelens_ratio", "× SAELens", "{:.2f}"),
  ("sparsify_tokens_per_s", "sparsify tokens/s", "{:,.0f}"),
  ("sparsify_ratio", "× sparsify", "{:.2f}"),
  ("loop_overhead", "loop adds", "{:.0%}"),
  ("target", "target", "{}"),
  ("target_met", "met", "{}"),
)


def cell(value: Any, fmt: str) -> str:
  return "—" if value is None or value == "" else fmt.format(value)


def table(rows: list[dict[str, Any]], columns) -> str:
  """A markdown table of `rows` by (row key, header, format) `columns`; None shows as —."""
  cells = [{header: cell(row.get(key), fmt) for key, header, fmt in columns} for row in rows]
  return tables.markdown(cells, [header for _, header, _ in columns])


def write_outputs(
  report: dict[str, Any], out_dir: str | pathlib.Path, json_name: str, md_name: str, text: str
) -> tuple[pathlib.Path, pathlib.Path]:
  """Write `report` as JSON and `text` as markdown into `out_dir`; return their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  json_path, md_path = out / json_name, out / md_name
  json_path.write_text(json.dumps(report, indent=2) + "\n")
  md_path.write_text(text)
  return json_path, md_path


def machine_line(report: dict[str, Any]) -> str:
  m = report["machine"]
  load = m.get("load_average") or [None]
  busy = "" if None in load else f", load average {load[0]:.1f} → {load[1]:.1f}"
  return (
    f"{report['date']}, {m['cpu']} ({m['cpus']} usable CPUs{busy}), {m['platform']}; "
    f"jax {m['jax']} on {m['devices']} × {m['device_kind']}; "
    f"{report['settings']['timing']} ({report['settings']['repeats']} repeats)."
  )


def _notes(peer: str, rows, note_key: str, label) -> list[str]:
  """One line per distinct note of `peer`, naming the rows (by `label`) that carry it."""
  by_note: dict[str, list[str]] = {}
  for row in rows:
    if row.get(note_key):
      by_note.setdefault(row[note_key], []).append(label(row))
  return [f"{peer} ({', '.join(labels)}): {note}." for note, labels in by_note.items()]


def markdown(report: dict[str, Any]) -> str:
  """The table of every row, then the machine it was measured on and the peers' notes."""
  rows = report["rows"]
  timed_sparsify = [row for row in rows if row.get("sparsify_ratio") is not None]
  notes = _notes("SAELens", rows, "saelens_note", lambda row: row["architecture"])
  notes += _notes(
    "sparsify",
    timed_sparsify,
    "sparsify_note",
    lambda row: row["architecture"] + (f":{row['variant']}" if row.get("variant") else ""),
  )
  return (
    "\n\n".join([table(report["rows"], COLUMNS), f"Machine: {machine_line(report)}", *notes]) + "\n"
  )


def write(report: dict[str, Any], out_dir: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """Write `sae_bench.json` and `sae_bench.md` into `out_dir`; return their paths."""
  return write_outputs(report, out_dir, JSON_FILE, MARKDOWN_FILE, markdown(report))


def replace_block(text: str, block: str) -> str:
  """`text` with what lies between the START and END markers replaced by `block`."""
  start, end = text.find(START), text.find(END)
  if start < 0 or end < start:
    raise JaxsaeError(f"no {START} ... {END} markers (in that order) to put the table between")
  return text[: start + len(START)] + "\n" + block.strip("\n") + "\n" + text[end:]


def update_readme(path: str | pathlib.Path, report: dict[str, Any]) -> None:
  """Replace the table between the markers in `path` with this report's."""
  path = pathlib.Path(path)
  path.write_text(replace_block(path.read_text(), markdown(report)))
