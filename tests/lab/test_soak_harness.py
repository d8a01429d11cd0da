"""The soak's own judgement, without a lab: what the client calls an integrity failure (against
small misbehaving servers on loopback), how recovery, growth and the verdict are computed, and the
event schedule. A soak that cannot see a lost byte would pass for the wrong reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import pytest

from lab.soak import IDLE_EVERY, plan, split_tunnels
from lab.soakload import Driver, classify, exchange, idle_until, probe
from lab.soakreport import (
    Attempt,
    EventRecord,
    HeldProbe,
    ProcessSeries,
    Slack,
    count_log_lines,
    growth,
    held_tally,
    parse_cpu_ticks,
    parse_status_kib,
    phases,
    recovery,
    tally,
    verdict,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --- the client's classification, against real sockets ----------------------------------------
async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while chunk := await reader.read(65536):
        data += chunk
    return bytes(data)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await _read_all(reader))
    writer.write_eof()
    writer.close()


async def half_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await _read_all(reader)
    writer.write(data[: len(data) // 2])
    writer.close()  # a FIN: "that was everything"


async def flip_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = bytearray(await _read_all(reader))
    data[-1] ^= 1
    writer.write(bytes(data))
    writer.close()


async def silent_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_all(reader)
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def exchange_with(handler: Handler, payload: bytes) -> str:
    async def run() -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            result, _echo, _error = await asyncio.wait_for(exchange(port, payload), 10)
        finally:
            server.close()
        return result

    return asyncio.run(run())


@pytest.mark.parametrize(("handler", "expected"), [
    (echo, "ok"), (half_echo, "truncated"), (flip_echo, "corrupt"), (silent_close, "empty"),
    (reset, "reset")])
def test_the_client_tells_a_lie_from_a_failure(handler: Handler, expected: str) -> None:
    assert exchange_with(handler, bytes(range(256)) * 40) == expected


def test_a_closed_port_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert asyncio.run(exchange(port, b"x"))[0] == "refused"


def test_classify() -> None:
    assert classify(b"abc", b"abc") == "ok"
    assert classify(b"abc", b"ab") == "truncated"
    assert classify(b"abc", b"") == "empty"
    assert classify(b"abc", b"abd") == "corrupt"
    assert classify(b"abc", b"abcd") == "corrupt"


# --- held sessions, against real sockets -----------------------------------------------------
async def held_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def held_half_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read(65536)
    writer.write(data[: len(data) // 2])
    writer.close()  # a FIN in the middle of a probe's echo


async def held_flip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = bytearray(await reader.readexactly(4))
    data[0] ^= 1
    writer.write(bytes(data))
    await reader.read(1)


def probe_with(handler: Handler, payload: bytes) -> str:
    async def run() -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            result, _echo, _error = await asyncio.wait_for(probe(reader, writer, payload), 10)
            writer.close()
        finally:
            server.close()
        return result

    return asyncio.run(run())


async def held_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.close()


@pytest.mark.parametrize(("handler", "expected"), [
    (held_echo, "ok"), (held_half_echo, "truncated"), (held_silent, "empty"),
    (held_flip, "corrupt"), (reset, "reset")])
def test_a_held_sessions_probe_tells_a_lie_from_a_failure(handler: Handler,
                                                          expected: str) -> None:
    payload = b"abcd" if handler is held_flip else bytes(range(256)) * 4
    assert probe_with(handler, payload) == expected


async def close_after(delay: float, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(delay)
    writer.close()


async def send_after(delay: float, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(delay)
    writer.write(b"?")
    await reader.read(1)


@pytest.mark.parametrize(("handler", "expected"), [
    (lambda r, w: close_after(0.05, r, w), "closed"),
    (lambda r, w: send_after(0.05, r, w), "corrupt"),
    (lambda r, w: close_after(5.0, r, w), None)])
def test_a_held_session_ending_while_idle_is_noticed(handler: Handler,
                                                     expected: str | None) -> None:
    async def run() -> str | None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            found = await idle_until(reader, time.monotonic() + 0.5, asyncio.Event())
            writer.close()
        finally:
            server.close()
        return None if found is None else found[0]

    assert asyncio.run(run()) == expected


def test_a_held_session_that_failed_is_replaced_and_probed_on() -> None:
    """Through the client itself: the server ends the first connection after its second probe;
    the failure is recorded, a new session opens at once and answers the next probes."""
    held_out = io.StringIO()

    async def run() -> None:
        served = 0

        async def server_side(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
            nonlocal served
            served += 1
            probes = 0
            while data := await reader.read(65536):
                writer.write(data)
                probes += 1
                if served == 1 and probes == 2:  # a probe's echo arrives in one read here
                    await writer.drain()
                    break
            writer.close()

        server = await asyncio.start_server(server_side, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        driver = Driver(port, 1, seconds=1.55, rate=1.0, timeout=5.0, out=io.StringIO(), seed=1,
                        held_every=0.2, held_out=held_out)
        try:
            await asyncio.wait_for(driver.held(0, time.monotonic()), 10)
        finally:
            server.close()

    asyncio.run(run())
    entries = [json.loads(line) for line in held_out.getvalue().splitlines()]
    results = [(e["session"], e["result"]) for e in entries]
    assert results[:3] == [(1, "ok"), (1, "ok"), (1, "closed")], results
    assert {r for s, r in results[3:]} == {"ok"} and {s for s, _ in results[3:]} == {2}
    assert len(results) >= 6
    # replaced at once (a user starts ssh again), not at the next probe's time
    assert entries[3]["opened"] - entries[2]["end"] < 0.1, entries[2:4]


def held(tunnel: int, session: int, opened: float, end: float, result: str = "ok") -> HeldProbe:
    return HeldProbe(tunnel, session, opened, 0, end - 0.1, end, 10, result,
                     10 if result == "ok" else 0)


def test_a_held_failure_is_explained_only_by_a_restart_of_its_own_exposer() -> None:
    events = [EventRecord(1, "restart-kill", at=50.0, reference=51.0, tunnels=[1]),
              EventRecord(2, "nat-reboot", at=80.0, reference=80.0, tunnels=[0, 1])]
    probes = [
        held(0, 1, 0.0, 30.0), held(0, 1, 0.0, 60.0),  # tunnel 0 outlives the restart of 1's
        held(1, 1, 0.0, 30.0), held(1, 1, 0.0, 60.0, "reset"),  # killed with its process
        held(1, 2, 61.0, 90.0),  # its successor lives through the NAT reboot
        held(0, 1, 0.0, 90.0, "timeout"),  # a NAT reboot explains nothing
        held(1, 2, 61.0, 120.0, "truncated"),  # never explained
        held(1, 2, 61.0, 121.0, "unfinished"),
    ]
    tally_ = held_tally(probes, events)
    assert (tally_["sessions"], tally_["probes"], tally_["succeeded"]) == (3, 7, 4)
    assert tally_["failed_at_a_restart"] == 1 and tally_["failed_unexplained"] == 1
    assert tally_["integrity_failures"] == 1 and tally_["longest_session_s"] == 60.0
    assert [e["result"] for e in tally_["unexplained_examples"]] == ["timeout", "truncated"]
    # the restart at 50 s came before the session opened at 61 s: it explains nothing there
    assert held_tally([held(1, 2, 61.0, 70.0, "reset")], events)["failed_unexplained"] == 1


# --- recovery and phases ----------------------------------------------------------------------
def ok(tunnel: int, start: float, end: float, result: str = "ok") -> Attempt:
    return Attempt(tunnel, 0, start, end, 100, result, 100 if result == "ok" else 0)


def test_recovery_counts_from_the_reference_and_waits_for_every_tunnel() -> None:
    event = EventRecord(1, "restart-kill", at=10.0, reference=11.0, tunnels=[0, 1])
    attempts = [
        ok(0, 9.5, 10.5),  # started before the process was up: does not count
        ok(0, 10.2, 10.4, "reset"),
        ok(0, 11.2, 11.5),
        ok(1, 11.0, 14.0),  # a connection that waited for the tunnel, then went through
        ok(1, 12.0, 12.1),
        ok(2, 10.0, 10.1),  # not touched by the event
    ]
    rec = recovery(event, attempts, until=60.0)
    assert rec["recovered"] and rec["per_tunnel_s"] == {"0": 0.5, "1": 1.1}
    assert rec["recovery_s"] == 1.1 and rec["recovery_from_event_s"] == 2.1
    assert rec["within_bound"] and rec["window_end"] == pytest.approx(12.1)


def test_no_success_before_the_next_event_is_no_recovery() -> None:
    event = EventRecord(1, "restart-clean", at=10.0, reference=10.5, tunnels=[0])
    rec = recovery(event, [ok(0, 11.0, 11.1, "timeout"), ok(0, 31.0, 31.1)], until=30.0)
    assert not rec["recovered"] and rec["recovery_s"] is None and not rec["within_bound"]
    assert rec["window_end"] == 30.0
    never_up = EventRecord(2, "restart-clean", at=10.0, reference=None, tunnels=[0])
    assert not recovery(never_up, [ok(0, 11.0, 11.1)], until=30.0)["recovered"]


def test_slow_recovery_is_outside_the_bound() -> None:
    event = EventRecord(1, "restart-clean", at=10.0, reference=10.5, tunnels=[0])
    rec = recovery(event, [ok(0, 11.0, 16.0)], until=60.0)
    assert rec["recovered"] and rec["recovery_s"] == 5.5 and not rec["within_bound"]


def test_phases_and_tally() -> None:
    event = EventRecord(1, "nat-reboot", at=10.0, reference=10.0, tunnels=[0])
    attempts = [ok(0, 5.0, 5.1), ok(0, 10.5, 11.0, "timeout"), ok(0, 12.0, 12.1, "truncated"),
                ok(0, 20.0, 20.1), ok(0, 21.0, 21.0, "unfinished")]
    steady, window = phases([event], [(10.0, 15.0)], attempts)
    assert (steady["attempted"], steady["succeeded"], steady["failed"]) == (2, 2, 0)
    assert (window["attempted"], window["failed"], window["integrity_failures"]) == (2, 1, 1)
    total = tally(attempts)
    assert total["bytes_checked"] == 200 and total["by_result"]["timeout"] == 1
    assert "unfinished" not in total["by_result"]


# --- processes --------------------------------------------------------------------------------
def series(values: list[tuple[int, int]], started: float = 0.0) -> ProcessSeries:
    s = ProcessSeries("laptop", 1, 123, started)
    s.samples = [(started + 2.0 * i, rss, fds, 0.0) for i, (rss, fds) in enumerate(values)]
    return s


def test_growth_is_judged_between_the_first_and_last_windows_after_warm_up() -> None:
    flat = series([(50_000, 20)] * 100)  # 200 s of samples
    g = growth(flat, warmup=30, window=10, slack=Slack())
    assert g["judged"] and g["flat"] and g["rss"]["growth_pct"] == 0.0
    leak = series([(50_000 + 200 * i, 20 + i // 10) for i in range(100)])
    g = growth(leak, warmup=30, window=10, slack=Slack())
    assert not g["flat"] and not g["rss"]["flat"] and not g["fds"]["flat"]
    assert g["rss"]["growth_pct"] > 10


def test_slack_absorbs_small_steps_only() -> None:
    step = series([(40_000, 15)] * 50 + [(41_000, 18)] * 50)
    assert not growth(step, 30, 10, Slack())["fds"]["flat"]  # 15 -> 18 is 20 %
    assert growth(step, 30, 10, Slack(rss_kib=2048, fds=4))["flat"]
    big = series([(40_000, 15)] * 50 + [(40_000, 30)] * 50)
    assert not growth(big, 30, 10, Slack(rss_kib=2048, fds=4))["flat"]


def test_samples_taken_during_an_event_are_left_out() -> None:
    # Connections waiting out an event hold fds (40-60 s); a leak stays after it (from 150 s).
    values = [(40_000, 40 if 40 <= 2 * i <= 60 else 15) for i in range(100)]
    g = growth(series(values), 30, 10, Slack(), busy=[(38.0, 62.0)])
    assert g["flat"] and g["fds"]["first"] == 15 and g["first_window_s"] == [30.0, 74.0]
    assert growth(series(values), 30, 10, Slack())["fds"]["first"] > 15  # a leak would hide
    leaked = [(40_000, 20 if 2 * i >= 150 else 15) for i in range(100)]
    assert not growth(series(leaked), 30, 10, Slack(), busy=[(140.0, 150.0)])["flat"]


def test_a_short_life_is_not_judged() -> None:
    g = growth(series([(1, 1)] * 30), warmup=30, window=10, slack=Slack())  # 58 s
    assert not g["judged"] and "needs 2 x 10" in g["why"]


def test_proc_parsers() -> None:
    assert parse_status_kib("Name:\tpython\nVmRSS:\t  41234 kB\n", "VmRSS") == 41234
    assert parse_status_kib("Name:\tpython\n", "VmRSS") is None
    stat = "42 (my (odd) name) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0"
    assert parse_cpu_ticks(stat) == 300


def test_log_scan_finds_printed_and_hidden_tracebacks() -> None:
    log = ("12:00:00 INFO x: fine\nTraceback (most recent call last):\n  File ...\n"
           + "12:00:01 ERROR asyncio: Fatal error: ValueError: x (run with -v for details)\n" * 5)
    found = count_log_lines(log.splitlines(keepends=True))
    assert found["tracebacks"] == (1, ["Traceback (most recent call last):"])
    count, examples = found["hidden_tracebacks"]
    assert count == 5 and len(examples) == 3 and examples[0].endswith("for details)")


# --- the verdict and the plan -----------------------------------------------------------------
def test_verdict_names_each_broken_criterion() -> None:
    connections = {"integrity_failures": 2, "succeeded": 10}
    events = [{"index": 1, "kind": "restart-kill", "recovered": True, "within_bound": False,
               "recovery_s": 20.0, "bound_s": 15.0},
              {"index": 2, "kind": "nat-reboot", "recovered": False, "within_bound": False,
               "recovery_s": None, "bound_s": 30.0}]
    processes = [{"name": "laptop#1", "growth": {
        "judged": True, "flat": False, "rss": {"flat": True, "growth_pct": 1.0},
        "fds": {"flat": False, "growth_pct": 50.0}}}]
    logs = {"tracebacks": 1, "hidden_tracebacks": 0, "files_with": ["laptop.1.log"]}
    reasons = verdict(connections, events, processes, logs, ["home-a#1 (exit 1)"])
    assert reasons == [
        "home-a#1 (exit 1) exited on its own",
        "2 connections lost or corrupted bytes behind a clean EOF",
        "event 1 (restart-kill) recovered in 20.0 s > 15 s",
        "event 2 (nat-reboot) did not recover",
        "laptop#1 grew: fds 50.0%",
        "1 tracebacks in the logs (laptop.1.log)",
    ]
    clean = {"tracebacks": 0, "hidden_tracebacks": 0, "files_with": []}
    assert verdict({"integrity_failures": 0, "succeeded": 1}, [], [], clean) == []
    good = {"integrity_failures": 0, "succeeded": 1}
    bad_held = {"integrity_failures": 1, "failed_unexplained": 2, "succeeded": 0}
    assert verdict(good, [], [], clean, held=bad_held) == [
        "1 probes of held sessions lost or corrupted bytes",
        "2 probes of held sessions failed with no restart of their exposing daemon to explain it",
        "no held session answered a probe"]
    assert verdict(good, [], [], clean,
                   held={"integrity_failures": 0, "failed_unexplained": 0, "succeeded": 3}) == []
    unjudged = [{"name": "laptop#1", "growth": {"judged": False, "why": "short"}}]
    assert verdict({"integrity_failures": 0, "succeeded": 1}, [], unjudged, clean) == [
        "no process lived long enough to judge its growth"]


def test_the_long_plan_restarts_every_two_minutes_and_the_short_one_does_each_event_once(
) -> None:
    long = plan(20 * 60)
    restarts = [(t, k) for t, k in long.events if k.startswith("restart")]
    assert [t for t, _ in restarts] == [120.0 * k for k in range(1, 10)]
    assert [k for _, k in restarts[:2]] == ["restart-clean", "restart-kill"]
    others = {k: t for t, k in long.events if not k.startswith("restart")}
    assert set(others) == {"nat-reboot", "rendezvous-restart"}
    assert all(t % 120 == 60 for t in others.values())  # halfway between two restarts
    assert long.slack == Slack() and long.warmup == 120 and long.window == 60
    short = plan(120)
    assert [k for _, k in short.events] == [
        "restart-clean", "restart-kill", "rendezvous-restart", "nat-reboot"]
    assert short.events[-1][0] <= 120 - 40
    with pytest.raises(ValueError):
        plan(110)


def test_the_idle_plan_reboots_the_nat_and_restarts_the_rendezvous_and_nothing_else() -> None:
    idle = plan(3600, IDLE_EVERY)
    assert idle.events == ((1200.0, "nat-reboot"), (2400.0, "rendezvous-restart"))
    assert idle.slack == Slack() and idle.warmup == 120
    assert plan(600, 30).events[0] == (200.0, "nat-reboot")
    with pytest.raises(ValueError, match="at least 20 minutes"):
        plan(1199, IDLE_EVERY)
    with pytest.raises(ValueError, match="at least 10 minutes"):
        plan(599, 30)
    # an event's bound in an idle run waits for the tunnel's next use
    event = EventRecord(1, "nat-reboot", 10.0, 10.0, [0], next_use=IDLE_EVERY)
    assert event.bound == 30.0 + IDLE_EVERY


def test_exposing_daemons_hold_at_most_max_names() -> None:
    assert split_tunnels(5) == [[0, 1], [2, 3, 4]]
    groups = split_tunnels(20)
    assert [len(g) for g in groups] == [8, 6, 6]
    assert sorted(t for g in groups for t in g) == list(range(20))
    assert all(len(g) <= 8 for g in split_tunnels(100))
