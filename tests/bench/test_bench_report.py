"""Summaries, ratios and the results README built from measured results (bench/report.py)."""

from __future__ import annotations

from typing import Any

from bench.report import main_rows, notes, ratios, results_readme, summarize
from bench.suite import GIB, PathResult
from bench.table import SpanRow


def measured(name: str, rate: float, p50: float) -> PathResult:
    r = PathResult(name, f"{name} path")
    r.bulk1 = [rate * 0.9, rate, rate * 1.1]
    r.bulk8 = [rate * 2] * 3
    r.latency_us = [p50] * 999 + [p50 * 10]
    r.connects = [0.01] * 29 + [None]
    r.bulk_bytes = 2 * GIB
    r.cpu_s = {"client": 3.0, "server": 1.0}
    r.peak_rss_kib = {"client": 20480, "server": 10240}
    r.base_rss_kib = {"client": 20000, "server": 10000}
    r.idle_rss_kib = {"client": 30240, "server": 10000}
    r.idle_opened = 1000
    return r


def test_summary_takes_medians_and_normalises_cpu_per_gib() -> None:
    s = summarize(measured("ssh -L", 600e6, 130.0))
    assert s["bulk1_bytes_per_s"] == 600e6
    assert s["bulk8_bytes_per_s"] == 1200e6
    assert s["latency_us"]["p50"] == 130.0
    assert s["connects"] == {"attempted": 30, "succeeded": 29, "p50_ms": 10.0, "max_ms": 10.0}
    assert s["cpu_s_per_gib"] == {"client": 1.5, "server": 0.5}
    assert s["idle_pss_growth_mib"] == {"client": 10.0, "server": 0.0}


def test_ratios_are_ptunnel_over_each_peer_and_missing_when_a_side_is() -> None:
    summaries: list[dict[str, Any]] = [
        summarize(measured("ptunnel", 300e6, 260.0)),
        summarize(measured("ssh -L", 600e6, 130.0)),
        summarize(PathResult("hyperdht", "x", unavailable="node is not installed")),
    ]
    r = ratios(summaries)
    assert r["ptunnel/ssh -L x1 throughput"] == 0.5
    assert r["ptunnel/ssh -L p50 latency"] == 2.0
    assert r["ptunnel/hyperdht x1 throughput"] is None
    assert r["ptunnel/aioquic p50 latency"] is None


def test_unavailable_paths_become_span_rows_and_the_readme_names_the_machine() -> None:
    summaries = [summarize(measured("direct", 3e9, 40.0)),
                 summarize(PathResult("ptunnel", "x", unavailable="no `expose` yet"))]
    rows = main_rows(summaries)
    assert rows[1] == SpanRow("ptunnel", "unavailable: no `expose` yet")
    assert not isinstance(rows[0], SpanRow) and rows[0][1] == "3,000"
    doc = {
        "date": "2026-11-26 06:00 UTC",
        "machine": {"cpu": "Test CPU", "cpus": 2, "memory_gib": 24.0, "kernel": "6.18",
                    "python": "3.11.7", "tools": {"ssh": "OpenSSH_9.2p1", "node": None}},
        "loadavg_1m": {"before": 0.5, "after": 2.0},
        "settings": {"rounds": 5, "bulk_seconds": 2.0, "round_trips": 3000, "idle_streams": 1000},
        "paths": summaries,
        "ratios": ratios(summaries),
    }
    text = results_readme(doc, natlab_table=None)
    assert "2026-11-26 06:00 UTC" in text and "Test CPU" in text and "OpenSSH_9.2p1" in text
    assert "| ptunnel | unavailable: no `expose` yet |" in text
    assert "NAT lab" not in text


def test_failures_are_shown_not_hidden() -> None:
    r = measured("hyperdht", 60e6, 290.0)
    r.cold_starts = [13.7, None, 13.9]
    r.idle_failed = True
    r.idle_opened = 0
    r.setup_retries = 8
    r.errors = ["idle streams: timed out", "idle streams: timed out"]
    s = summarize(r)
    row = main_rows([s])[0]
    assert not isinstance(row, SpanRow)
    assert row[8] == "13,800 (2/3)"  # median of the successes, and how many succeeded
    assert row[10] == "failed"
    assert notes([s]) == ["hyperdht: 8 bulk connection(s) had to be reopened before the clock "
                          "started; idle streams: timed out"]
    r.cold_starts = [None, None]
    row = main_rows([summarize(r)])[0]
    assert not isinstance(row, SpanRow) and row[8] == "failed 0/2"


def test_the_compiled_build_is_compared_with_the_pure_one_cpu_included() -> None:
    summaries = [summarize(measured("ptunnel", 300e6, 260.0)),
                 summarize(measured("ptunnel pure", 100e6, 520.0))]
    summaries[1]["cpu_s_per_gib_total"] = 8.0  # the compiled one spends 2.0
    r = ratios(summaries)
    assert r["ptunnel/ptunnel pure x1 throughput"] == 3.0
    assert r["ptunnel/ptunnel pure p50 latency"] == 0.5
    assert r["ptunnel/ptunnel pure CPU s/GiB"] == 0.25


def test_readme_has_the_mtu_1500_table_first_and_says_why_one_is_missing() -> None:
    doc = {
        "date": "2026-12-02 02:00 UTC",
        "machine": {"cpu": "Test CPU", "cpus": 2, "memory_gib": 24.0, "kernel": "6.18",
                    "python": "3.11.7", "tools": {}},
        "loadavg_1m": {"before": 0.5, "after": 2.0},
        "settings": {"rounds": 5, "bulk_seconds": 2.0, "round_trips": 3000, "idle_streams": 1000},
        "paths": [], "ratios": {},
        "tables": [
            {"mtu": 1500, "label": "loopback at MTU 1,500", "paths": [],
             "unavailable": "needs root (network namespaces)", "ratios": {}},
            {"mtu": 65536, "label": "loopback at MTU 65,536",
             "paths": [summarize(measured("ptunnel", 300e6, 260.0))], "ratios": {}},
        ],
    }
    text = results_readme(doc, None)
    first, second = text.index("## Loopback at MTU 1,500"), text.index("## Loopback at MTU 65,536")
    assert first < second
    assert "Unavailable: needs root (network namespaces)." in text[first:second]
    assert "| ptunnel" in text[second:]
