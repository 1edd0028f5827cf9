"""The rows printer: the aggregates as an aligned table, CSV or JSON (``eventfleet results``, the demo)."""

import csv
import json
from typing import Any, TextIO

from ..window import iso

WINDOW_COLUMNS = ("window_start", "window_end")  # epoch ms, shown as UTC times in a table


def write_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, out: TextIO) -> None:
    """Print rows as an aligned table, CSV, or JSON (a list of objects keyed by column)."""
    if fmt == "json":
        json.dump([dict(zip(columns, row, strict=True)) for row in rows], out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    else:
        cells = [columns, *([_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in rows)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for n, r in enumerate(cells):
            out.write("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + "\n")
            if n == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")


def _cell(column: str, value: Any) -> str:
    if column in WINDOW_COLUMNS and isinstance(value, int):
        return iso(value)[:-5] + "Z"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
