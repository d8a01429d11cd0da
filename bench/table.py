"""Plain-text tables and number formats for the terminal and the results README (pure).

Units follow /work/shared/PERF.md: MB/s are 10^6 bytes per second, latencies in microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MISSING = "-"


@dataclass(frozen=True, slots=True)
class SpanRow:
    """A row whose text runs across every column after the first (e.g. "unavailable: why")."""

    first: str
    text: str


Row = Sequence[str] | SpanRow


def fmt_rate(bytes_per_second: float | None) -> str:
    """"1,234 MB/s" style, no unit; three significant figures below 100."""
    if bytes_per_second is None:
        return MISSING
    mb = bytes_per_second / 1e6
    if mb >= 100:
        return f"{mb:,.0f}"
    if mb >= 10:
        return f"{mb:.1f}"
    return f"{mb:.2f}"


def fmt_number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return MISSING
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}x"


# Cells aligned right: numbers ("1,234", "-0.1", "0.46x", "13,353 (1/2)"), counts ("25/30"),
# the missing mark and "failed ...".
_NUMERIC = re.compile(r"-?[\d,]+(\.\d+)?x?( \(\d+/\d+\))?|\d+/\d+|-|failed.*")


def _is_numeric(cell: str) -> bool:
    return _NUMERIC.fullmatch(cell) is not None


def format_table(headers: Sequence[str], rows: Sequence[Row], markdown: bool = False) -> str:
    """Columns sized to content; numeric cells right-aligned. `markdown` gives a pipe table."""
    plain = [list(r) for r in rows if not isinstance(r, SpanRow)]
    widths = [len(h) for h in headers]
    for cells in plain:
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells, expected {len(headers)}")
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    for row in rows:
        if isinstance(row, SpanRow):
            widths[0] = max(widths[0], len(row.first))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            numeric = i > 0 and _is_numeric(cell)
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        if markdown:
            return "| " + " | ".join(out) + " |"
        return "  ".join(out).rstrip()

    def span(row: SpanRow) -> str:
        if markdown:
            return f"| {row.first.ljust(widths[0])} | {row.text} |" + " |" * (len(widths) - 2)
        return f"{row.first.ljust(widths[0])}  {row.text}"

    lines = [line(headers)]
    if markdown:
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    else:
        lines.append("  ".join("-" * w for w in widths))
    lines.extend(span(r) if isinstance(r, SpanRow) else line(r) for r in rows)
    return "\n".join(lines)
