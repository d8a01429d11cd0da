"""Turn measured results into the terminal tables, the JSON document and the results README.

The JSON holds medians over rounds, percentiles, CDF points for the plot, per-process CPU and
memory, the NAT-lab goodput and the ratios; raw per-round rates are kept for inspection.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.paths.hyper import hyperdht_version
from bench.stats import cdf_points, median, ratio, summarize_latency
from bench.suite import GIB, PathResult
from bench.table import MISSING, Row, SpanRow, fmt_number, fmt_rate, fmt_ratio, format_table

MIB_PER_KIB = 1 / 1024
PTUNNEL = "ptunnel"
# The last is ptunnel's pure-Python build: "ptunnel/ptunnel pure" is what compiling gains.
PEERS_FOR_RATIOS = ("ssh -L", "aioquic", "hyperdht", "ptunnel pure")


def _version(argv: Sequence[str]) -> str | None:
    """The line of `tool --version` output that has the version, up to its first comma."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
    versioned = [line for line in lines if "version" in line.lower()] or lines
    return versioned[0].split(",")[0].strip() if versioned else None


def _python_package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tools": {
            "ssh": _version(["ssh", "-V"]),
            "socat": _version(["socat", "-V"]),
            "node": _version(["node", "--version"]),
            "wireguard-go": _version(["wireguard-go", "--version"]),
            "hyperdht": hyperdht_version(),
            "aioquic": _python_package_version("aioquic"),
        },
    }


def _sum_or_none(values: dict[str, float]) -> float | None:
    return sum(values.values()) if values else None


def summarize(r: PathResult) -> dict[str, Any]:
    if r.unavailable is not None:
        return {"name": r.name, "description": r.description, "unavailable": r.unavailable}
    lat = summarize_latency(r.latency_us) if r.latency_us else None
    ok_connects = [c for c in r.connects if c is not None]
    ok_cold = [c for c in r.cold_starts if c is not None]
    gib = r.bulk_bytes / GIB
    cpu_per_gib = {role: s / gib for role, s in r.cpu_s.items()} if gib > 0 else {}
    return {
        "name": r.name,
        "description": r.description,
        "bulk1_bytes_per_s": median(r.bulk1) if r.bulk1 else None,
        "bulk8_bytes_per_s": median(r.bulk8) if r.bulk8 else None,
        "bulk1_rounds": r.bulk1,
        "bulk8_rounds": r.bulk8,
        "latency_us": None if lat is None else {
            "count": lat.count, "p50": lat.p50_us, "p99": lat.p99_us, "p999": lat.p999_us,
            "max": lat.max_us,
        },
        "latency_cdf": cdf_points(r.latency_us),
        "connects": {"attempted": len(r.connects), "succeeded": len(ok_connects),
                     "p50_ms": median(ok_connects) * 1e3 if ok_connects else None,
                     "max_ms": max(ok_connects) * 1e3 if ok_connects else None},
        "cold_start": {"attempted": len(r.cold_starts), "succeeded": len(ok_cold),
                       "p50_ms": median(ok_cold) * 1e3 if ok_cold else None},
        "cpu_s_per_gib": cpu_per_gib,
        "cpu_s_per_gib_total": _sum_or_none(cpu_per_gib),
        "peak_rss_mib": {k: v * MIB_PER_KIB for k, v in r.peak_rss_kib.items()},
        "idle_streams": r.idle_opened,
        "idle_failed": r.idle_failed,
        "idle_connect_failures": r.idle_connect_failures,
        "idle_pss_mib": {k: v * MIB_PER_KIB for k, v in r.idle_rss_kib.items()},
        "idle_pss_growth_mib": {k: (v - r.base_rss_kib.get(k, 0)) * MIB_PER_KIB
                                for k, v in r.idle_rss_kib.items()},
        "bulk_setup_retries": r.setup_retries,
        "errors": r.errors,
    }


MAIN_HEADERS = ["path", "x1 MB/s", "x8 MB/s", "p50 us", "p99 us", "p99.9 us",
                "connect ms", "connects ok", "cold ms", "CPU s/GiB", "idle MiB"]


def main_rows(summaries: Sequence[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for s in summaries:
        if "unavailable" in s:
            rows.append(SpanRow(s["name"], f"unavailable: {s['unavailable']}"))
            continue
        lat = s["latency_us"] or {}
        conn = s["connects"]
        idle = sum(s["idle_pss_mib"].values()) if s["idle_pss_mib"] else None
        rows.append([
            s["name"],
            fmt_rate(s["bulk1_bytes_per_s"]),
            fmt_rate(s["bulk8_bytes_per_s"]),
            fmt_number(lat.get("p50")),
            fmt_number(lat.get("p99")),
            fmt_number(lat.get("p999")),
            fmt_number(conn["p50_ms"], 1),
            f"{conn['succeeded']}/{conn['attempted']}",
            _cold(s["cold_start"]),
            fmt_number(s["cpu_s_per_gib_total"], 1),
            "failed" if s.get("idle_failed") else
            fmt_number(idle, 1) if s["idle_streams"] else MISSING,
        ])
    return rows


def _cold(cold: dict[str, Any]) -> str:
    """Median cold start in ms, with the success count when some failed."""
    if not cold["attempted"]:
        return MISSING
    if cold["p50_ms"] is None:
        return f"failed 0/{cold['attempted']}"
    text = fmt_number(cold["p50_ms"])
    if cold["succeeded"] < cold["attempted"]:
        text += f" ({cold['succeeded']}/{cold['attempted']})"
    return text


def notes(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """What went wrong on each path during the run, one line a path."""
    lines = []
    for s in summaries:
        if "unavailable" in s:
            continue
        parts = list(dict.fromkeys(s["errors"]))  # the same failure each round: say it once
        if s.get("idle_connect_failures"):
            parts.append(f"{s['idle_connect_failures']} connects failed while opening the idle "
                         "streams (retried)")
        if s.get("bulk_setup_retries"):
            parts.insert(0, f"{s['bulk_setup_retries']} bulk connection(s) had to be reopened "
                            "before the clock started")
        if parts:
            lines.append(f"{s['name']}: " + "; ".join(parts))
    return lines


PROCESS_HEADERS = ["path", "process", "CPU s/GiB", "peak RSS MiB", "PSS MiB +idle streams"]


def process_rows(summaries: Sequence[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for s in summaries:
        if "unavailable" in s:
            continue
        for role, peak in s["peak_rss_mib"].items():
            rows.append([
                s["name"], role,
                fmt_number(s["cpu_s_per_gib"].get(role), 2),
                fmt_number(peak, 1),
                fmt_number(s["idle_pss_growth_mib"].get(role), 1),
            ])
    return rows


def ratios(summaries: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """ptunnel / peer for throughput (above 1 is better), latency p50 and CPU s/GiB (below 1 is
    better)."""
    by_name = {s["name"]: s for s in summaries if "unavailable" not in s}
    out: dict[str, float | None] = {}
    mine = by_name.get(PTUNNEL)
    for peer in PEERS_FOR_RATIOS:
        other = by_name.get(peer)
        for key, label in (("bulk1_bytes_per_s", "x1 throughput"),
                           ("bulk8_bytes_per_s", "x8 throughput")):
            out[f"ptunnel/{peer} {label}"] = ratio(
                mine.get(key) if mine else None, other.get(key) if other else None)
        out[f"ptunnel/{peer} p50 latency"] = ratio(
            (mine["latency_us"] or {}).get("p50") if mine else None,
            (other["latency_us"] or {}).get("p50") if other else None)
        out[f"ptunnel/{peer} CPU s/GiB"] = ratio(
            mine.get("cpu_s_per_gib_total") if mine else None,
            other.get("cpu_s_per_gib_total") if other else None)
    return out


def ratio_lines(values: dict[str, float | None]) -> list[str]:
    return [f"{label}: {fmt_ratio(v)}" for label, v in values.items()]


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table_section(table: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """One loopback table of the results README: paths, per process, ratios."""
    heading = f"## {table['label'][:1].upper()}{table['label'][1:]}"
    if "unavailable" in table:
        return [heading, "", f"Unavailable: {table['unavailable']}.", ""]
    summaries = table["paths"]
    return [
        heading,
        "",
        format_table(MAIN_HEADERS, main_rows(summaries), markdown=True),
        "",
        "`connect ms`: a new TCP connection through the running tunnel to the first echoed byte "
        "(median); `cold ms`: launching a fresh tunnel client to the first echoed byte. "
        "`CPU s/GiB`: CPU seconds of the path's processes per GiB moved in the bulk runs. "
        "`idle MiB`: memory (PSS, so socat's forks do not count shared pages "
        f"1,000 times) of the path's processes with {settings['idle_streams']:,} idle "
        "streams open.",
        "",
        *[f"- {line}" for line in notes(summaries)],
        "",
        "### Per process",
        "",
        format_table(PROCESS_HEADERS, process_rows(summaries), markdown=True),
        "",
        "### Ratios (ptunnel / peer)",
        "",
        *[f"- {line}" for line in ratio_lines(table["ratios"])],
        "",
    ]


def results_readme(doc: dict[str, Any], natlab_table: str | None) -> str:
    """bench/results/README.md: the latest full run on this machine."""
    m = doc["machine"]
    tools = ", ".join(v if v.lower().startswith(k) else f"{k} {v}"
                      for k, v in m["tools"].items() if v)
    tables = doc.get("tables") or [
        {"label": "loopback", "paths": doc["paths"], "ratios": doc["ratios"]}]
    parts = [
        "# Benchmark results: latest full run",
        "",
        f"Run {doc['date']} with `python -m bench` ({doc['settings']['rounds']} alternating "
        f"rounds, {doc['settings']['bulk_seconds']} s a bulk run, "
        f"{doc['settings']['round_trips']} round trips a latency run) on {m['cpus']} vCPUs "
        f"({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; "
        f"{tools}. Everything on 127.0.0.1, each table in a network namespace of its own whose "
        "loopback has that table's MTU, every path alike. MB/s are 10^6 bytes/s (median over "
        "rounds); latency is a 64-byte request/response with TCP_NODELAY, pooled over rounds. "
        f"1-minute load average {doc['loadavg_1m']['before']:.1f} before the run and "
        f"{doc['loadavg_1m']['after']:.1f} after it (the suite itself adds about 2): absolute "
        "numbers move with whatever else the machine runs; the ratios, from alternating rounds, "
        "much less. `ptunnel` is the default build (its description names it: mypyc-compiled "
        "where it was built), `ptunnel pure` the pure-Python build (PTUNNEL_PURE=1).",
        "",
    ]
    for table in tables:
        parts += _table_section(table, doc["settings"])
    if natlab_table:
        rounds = doc["settings"].get("natlab_rounds")
        parts += [
            "## NAT lab: goodput over a lossy path",
            "",
            "One TCP connection for "
            f"{doc['settings']['bulk_seconds'] + 1:.0f} s from namespace A to the sink in B "
            "through router namespace R, where nftables drops that share of every forwarded "
            "packet at random (both directions)"
            + (f"; median of {rounds} alternating rounds." if rounds else "."),
            "",
            natlab_table,
            "",
        ]
    parts += ["Plots: `throughput.png`, `latency_cdf.png`, `goodput_loss.png`; "
              "raw numbers: `results.json`.", ""]
    return "\n".join(parts)
