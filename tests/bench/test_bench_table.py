"""Table formatting of the benchmark harness (bench/table.py)."""

from __future__ import annotations

import pytest

from bench.table import Row, SpanRow, fmt_number, fmt_rate, fmt_ratio, format_table


def test_rates_are_megabytes_with_sensible_digits() -> None:
    assert fmt_rate(4_012_000_000) == "4,012"
    assert fmt_rate(24_400_000) == "24.4"
    assert fmt_rate(2_345_000) == "2.35"
    assert fmt_rate(None) == "-"
    assert fmt_number(1234.56, 1) == "1,234.6"
    assert fmt_ratio(0.456) == "0.46x"
    assert fmt_ratio(None) == "-"


def test_columns_align_numbers_right_and_text_left() -> None:
    text = format_table(["path", "MB/s"], [["direct", "4,012"], ["ssh -L", "612"]])
    lines = text.splitlines()
    assert lines == [
        "path    MB/s",
        "------  -----",
        "direct  4,012",
        "ssh -L    612",
    ]


def test_negative_numbers_align_right() -> None:
    lines = format_table(["path", "MiB"], [["a", "-0.1"], ["b", "84.6"]]).splitlines()
    assert lines[2:] == ["a     -0.1", "b     84.6"]


def test_unavailable_row_spans_and_does_not_widen_columns() -> None:
    rows: list[Row] = [["direct", "4,012"],
                       SpanRow("ptunnel", "unavailable: no `ptunnel expose` yet")]
    lines = format_table(["path", "MB/s"], rows).splitlines()
    assert lines[-1] == "ptunnel  unavailable: no `ptunnel expose` yet"
    assert lines[1] == "-------  -----"  # widened for "ptunnel" only, not for the long text


def test_markdown_table_has_a_separator_and_pipes() -> None:
    rows: list[Row] = [["direct", "4,012"],
                       SpanRow("hyperdht", "unavailable: node is not installed")]
    lines = format_table(["path", "MB/s"], rows, markdown=True).splitlines()
    assert lines[0] == "| path     | MB/s  |"
    assert lines[1] == "|----------|-------|"
    assert lines[2] == "| direct   | 4,012 |"
    assert lines[3] == "| hyperdht | unavailable: node is not installed |"


def test_ragged_rows_are_refused() -> None:
    with pytest.raises(ValueError):
        format_table(["a", "b"], [["only one"]])
