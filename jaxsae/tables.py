"""Markdown and CSV tables from lists of row dicts: what comparisons and reports print."""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any, digits: int) -> str:
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def markdown(
  rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4
) -> str:
  """A GitHub-flavoured markdown table; columns default to the first row's keys."""
  columns = list(columns or (rows[0].keys() if rows else []))
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_cell(row.get(c, ""), digits) for c in columns) + " |")
  return "\n".join(lines)


def write_csv(
  path: str | pathlib.Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> None:
  columns = list(columns or (rows[0].keys() if rows else []))
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
