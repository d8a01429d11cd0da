"""The loopback suite: every path up at once, measured in alternating rounds.

Machine drift (turbo, a noisy neighbour on the VM) then hits every path alike: round r measures
the paths in an order rotated by r, each path doing bulk x1, bulk x8 and latency before the next
path starts. Connection set-up, cold starts and idle-stream memory follow the rounds.
"""

from __future__ import annotations

import logging
import resource
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench import load
from bench.load import LOAD_ERRORS
from bench.paths.base import Adapter, ColdStartable, Target
from bench.procs import Child, Unavailable, cpu_seconds, json_field, memory_kib, tree_memory_kib

log = logging.getLogger(__name__)

GIB = 1 << 30
CONNECT_TIMEOUT_S = 5.0  # a connect slower than this counts as failed (hyperdht's own limit ~)
# One idle connect in this many may fail (hyperdht loses about one connect in six) before the
# idle-streams measurement gives up.
IDLE_FAILURES_TOLERATED = 4
IDLE_BUDGET_S = 30.0  # opening the idle streams may take this long in all (~10 s is usual)
COLD_TIMEOUT_S = 20.0  # a client not passing bytes 20 s after launch counts as failed


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int
    bulk_seconds: float
    round_trips: int
    connects: int
    cold_starts: int
    idle_streams: int
    natlab_rounds: int = 1
    parallel: int = 8


# 4 NAT-lab rounds, not 2: with 2, goodput at 1 % loss read 80, 98 and 91 % of loss-free in
# three full runs of unchanged code; a median of 4 costs about a minute more a run.
FULL = Settings(rounds=5, bulk_seconds=2.0, round_trips=3000, connects=30, cold_starts=3,
                idle_streams=1000, natlab_rounds=4)
QUICK = Settings(rounds=1, bulk_seconds=0.5, round_trips=500, connects=10, cold_starts=2,
                 idle_streams=100)


@dataclass(slots=True)
class PathResult:
    """Everything measured on one path (mutable: filled in round by round)."""

    name: str
    description: str
    unavailable: str | None = None
    bulk1: list[float] = field(default_factory=list)  # bytes/s, one value a round
    bulk8: list[float] = field(default_factory=list)
    latency_us: list[float] = field(default_factory=list)  # pooled over the rounds
    connects: list[float | None] = field(default_factory=list)  # seconds, None = failed
    cold_starts: list[float | None] = field(default_factory=list)
    bulk_bytes: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process role, during bulk
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    idle_rss_kib: dict[str, int] = field(default_factory=dict)  # PSS with the idle streams open
    base_rss_kib: dict[str, int] = field(default_factory=dict)  # PSS just before opening them
    idle_opened: int = 0
    idle_failed: bool = False
    idle_connect_failures: int = 0  # connects that failed while opening the idle streams
    setup_retries: int = 0  # bulk connections that failed to come up and were opened again
    errors: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


def raise_fd_limit() -> None:
    """1,000 idle streams need ~2,000 descriptors in us and in each tunnel (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_by_role(procs: dict[str, Child]) -> dict[str, float]:
    return {role: cpu_seconds([c.pid]) for role, c in procs.items()}


def _measure_round(adapter: Adapter, port: int, result: PathResult, s: Settings,
                   progress: Progress) -> None:
    before = _cpu_by_role(adapter.processes())
    moved = 0
    try:
        one = load.bulk(port, s.bulk_seconds, 1)
        result.bulk1.append(one.rate)
        many = load.bulk(port, s.bulk_seconds, s.parallel)
        result.bulk8.append(many.rate)
        moved = one.bytes_moved + many.bytes_moved
        result.setup_retries += one.setup_retries + many.setup_retries
        progress(f"{result.name}: bulk x1 {one.rate / 1e6:,.0f} MB/s, "
                 f"x{s.parallel} {many.rate / 1e6:,.0f} MB/s")
    except LOAD_ERRORS as exc:
        result.errors.append(f"bulk: {exc}")
        progress(f"{result.name}: bulk failed: {exc}")
    after = _cpu_by_role(adapter.processes())
    result.bulk_bytes += moved
    for role in after:
        result.cpu_s[role] = result.cpu_s.get(role, 0.0) + after[role] - before.get(role, 0.0)
    try:
        samples = load.latency(port, s.round_trips)
        result.latency_us.extend(samples)
        samples.sort()
        progress(f"{result.name}: latency p50 {samples[len(samples) // 2]:,.0f} µs")
    except LOAD_ERRORS as exc:
        result.errors.append(f"latency: {exc}")
        progress(f"{result.name}: latency failed: {exc}")


def _measure_connects(adapter: Adapter, port: int, result: PathResult, s: Settings,
                      progress: Progress) -> None:
    result.connects = [load.first_byte(port, CONNECT_TIMEOUT_S) for _ in range(s.connects)]
    ok = sum(c is not None for c in result.connects)
    progress(f"{result.name}: {ok}/{s.connects} new connections reached the echo server")
    if isinstance(adapter, ColdStartable) and s.cold_starts:
        result.cold_starts = [adapter.cold_start(COLD_TIMEOUT_S) for _ in range(s.cold_starts)]
        done = [c for c in result.cold_starts if c is not None]
        if done:
            progress(f"{result.name}: cold start to first byte {min(done) * 1e3:,.0f} ms (best)")


def _measure_idle(adapter: Adapter, port: int, result: PathResult, s: Settings,
                  progress: Progress) -> None:
    procs = adapter.processes()
    result.base_rss_kib = {role: tree_memory_kib(c.pid) for role, c in procs.items()}
    socks: list[socket.socket] = []
    try:
        socks, result.idle_connect_failures = load.open_idle(
            port, s.idle_streams, max_failures=s.idle_streams // IDLE_FAILURES_TOLERATED,
            timeout=CONNECT_TIMEOUT_S, budget=IDLE_BUDGET_S)
        time.sleep(0.5)  # let the tunnel settle its per-stream buffers before reading memory
        result.idle_opened = len(socks)
        result.idle_rss_kib = {role: tree_memory_kib(c.pid) for role, c in procs.items()}
        progress(f"{result.name}: {len(socks)} idle streams open")
    except LOAD_ERRORS as exc:
        result.idle_failed = True
        result.errors.append(f"idle streams: {exc}")
        progress(f"{result.name}: idle streams failed: {exc}")
    finally:
        for sock in socks:
            sock.close()


def run_suite(adapters: Sequence[Adapter], settings: Settings,
              progress: Progress) -> list[PathResult]:
    raise_fd_limit()
    results = {a.name: PathResult(a.name, a.description) for a in adapters}
    sink = Child("sink", [sys.executable, "-m", "bench.sink"])
    started: list[tuple[Adapter, int]] = []
    try:
        port = sink.wait_line(json_field("port", int), 10.0)
        target = Target("127.0.0.1", port)
        for adapter in adapters:
            progress(f"starting {adapter.name}")
            try:
                started.append((adapter, adapter.start(target)))
            except Unavailable as exc:
                results[adapter.name].unavailable = str(exc)
                progress(f"{adapter.name}: unavailable: {exc}")
                adapter.stop()
        for r in range(settings.rounds):
            order = started[r % len(started):] + started[:r % len(started)] if started else []
            for adapter, local in order:
                progress(f"[round {r + 1}/{settings.rounds}] {adapter.name}")
                _measure_round(adapter, local, results[adapter.name], settings, progress)
        for adapter, local in started:
            _measure_connects(adapter, local, results[adapter.name], settings, progress)
            _measure_idle(adapter, local, results[adapter.name], settings, progress)
            results[adapter.name].peak_rss_kib = {
                role: memory_kib(c.pid, "VmHWM") or 0 for role, c in adapter.processes().items()
            }
    finally:
        for adapter, _ in started:
            adapter.stop()
        sink.stop()
    return [results[a.name] for a in adapters]

