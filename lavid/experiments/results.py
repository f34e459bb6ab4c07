"""One writer for every sweep's ``results.md``, ``results.csv`` and ``results.json``, and the Markdown table
they share."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: a header line, the rule, one line per row (cells as given; ``|`` inside a cell is
    replaced so it cannot break the table)."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers)] + [line(row) for row in rows])


def cell(value: Any, fmt: str = "{}") -> str:
    """``fmt`` of ``value``; an en dash where there is none (missing, empty or NaN)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(out: str | os.PathLike, markdown: str, rows: list[dict[str, Any]], payload: Any = None,
                  columns: Sequence[str] = ()) -> dict[str, Path]:
    """Write a sweep's results into ``out`` (each file replaced atomically: a kill never leaves half a table).

    Args:
        out: the sweep's folder.
        markdown: the whole text of ``results.md``.
        rows: one dict per run or method, the rows of ``results.csv``.
        payload: what ``results.json`` holds (default: ``rows``).
        columns: the CSV's first columns, in order; every other key of the rows follows in first-seen order.

    Returns:
        ``{"md": path, "csv": path, "json": path}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys([*columns, *(k for row in rows for k in row)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json"}
    _write_atomic(paths["md"], markdown.rstrip("\n") + "\n")
    _write_atomic(paths["csv"], buffer.getvalue())
    _write_atomic(paths["json"], json.dumps(rows if payload is None else payload, indent=1))
    return paths
