"""The heap keeps what it frees (tunnel.cli.heap): a 64 KiB buffer a datagram is not faulted in
again page by page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import ENV, command, ptunnel
from tunnel.cli import heap

ROOT = Path(__file__).resolve().parents[2]

# `count` buffers of `size` bytes alive at once, then freed, `rounds` times (argv: mode, count,
# size, rounds); prints the page faults of the rounds after a warm-up.
CHURN = f"""
import ctypes, resource, sys
sys.path.insert(0, {str(ROOT)!r})
from tunnel.cli.heap import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory

# glibc's initial thresholds, held: where a process stands until it happens to free a chunk that
# malloc had mapped on its own (the imports above may have done so; the test must not depend on it)
libc = ctypes.CDLL(None)
assert libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024) == libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024) == 1
if sys.argv[1] == "kept":
    assert keep_freed_memory()

count, size, rounds = map(int, sys.argv[2:5])

def churn():
    buffers = [bytearray(size) for _ in range(count)]
    del buffers

for _ in range(20):
    churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(rounds):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def without_user_settings() -> dict[str, str]:
    return {k: v for k, v in ENV.items() if k not in heap.USER_SETTINGS}


def page_faults(mode: str, count: int, size: int, rounds: int) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode, str(count), str(size), str(rounds)],
                          env=without_user_settings(), capture_output=True, text=True, timeout=60,
                          check=True)
    return int(done.stdout)


@pytest.mark.skipif(not heap.is_glibc(), reason="mallopt is glibc's")
def test_freed_datagram_buffers_are_reused_without_page_faults() -> None:
    """Three 65,000-byte buffers alive at once, as a node opening a run of large datagrams has:
    192 KiB free at the heap's top is more than glibc's initial trim threshold."""
    default, kept = page_faults("default", 3, 65000, 500), page_faults("kept", 3, 65000, 500)
    # 1,500 allocations of 16 pages each: glibc's initial thresholds fault a third of them in again.
    assert default > 2_000, f"the defaults did not trim this time ({default} faults)"
    assert kept < 200, f"{kept} page faults with the heap kept, {default} without"


@pytest.mark.skipif(not heap.is_glibc(), reason="mallopt is glibc's")
def test_what_a_busy_tunnel_holds_in_flight_is_reused_without_page_faults() -> None:
    """Eight streams' send buffers of read areas (8 x 2 MiB of 256 KiB areas), acknowledged and
    read again: 16 MiB goes free at the top at once, which 1 MiB kept handed back every time."""
    kept = page_faults("kept", 64, 256 * 1024, 40)
    assert kept < 200, f"{kept} page faults with the heap kept"


def test_a_users_own_allocator_settings_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert heap.keep_freed_memory() is False


def test_nothing_to_do_outside_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(os, "confstr", unknown)
    assert heap.is_glibc() is False
    assert heap.keep_freed_memory() is False


@pytest.mark.skipif(not heap.is_glibc(), reason="mallopt is glibc's")
def test_a_command_that_runs_a_loop_keeps_the_heap(tmp_path: Path) -> None:
    # The quickest such command: a rendezvous whose port is taken fails at once, in its loop.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        argv = ("rendezvous", "--listen", f"127.0.0.1:{taken.getsockname()[1]}",
                "--db", str(tmp_path / "r.db"), "-vv")
        done = subprocess.run(command(*argv), env=without_user_settings(), capture_output=True,
                              text=True, timeout=60)
        users = ptunnel(*argv, env={"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert done.returncode == 1 and "address already in use" in done.stderr, done.stderr
    assert "allocations up to 1024 KiB from the heap" in done.stderr, done.stderr
    assert "MALLOC_TRIM_THRESHOLD_ set: glibc's allocator stays as configured" in users.stderr


# A burst's memory freed between objects that stay: 130 MB of 1-65 KB buffers, each followed by a
# small one that outlives it, so no free memory lies at the heap's top for free() to hand back.
# Then a command's event loop runs (run_async), looking every 50 ms whether it went quiet.
BURST = f"""
import asyncio, random, sys
sys.path.insert(0, {str(ROOT)!r})
from tunnel.cli import heap, runtime

heap.TRIM_CHECK = 0.05
rng = random.Random(7)
kept, burst = [], []
for _ in range(4000):
    burst.append(bytearray(rng.randint(1000, 65000)))
    kept.append(bytearray(200))
del burst
freed = heap.resident_kib()

async def main() -> int:
    await asyncio.sleep(0.5)
    return heap.resident_kib()

print(freed, runtime.run_async(main))
"""


def resident_after_burst(env: dict[str, str]) -> tuple[int, int]:
    """(KiB resident once the burst is freed, KiB resident after half a second of the loop)"""
    done = subprocess.run([sys.executable, "-c", BURST], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    freed, later = done.stdout.split()
    return int(freed), int(later)


@pytest.mark.skipif(not heap.is_glibc(), reason="malloc_trim is glibc's")
def test_a_running_command_gives_a_bursts_memory_back() -> None:
    freed, later = resident_after_burst(without_user_settings())
    assert freed > 120_000, f"the burst's memory was not held after free(): {freed} KiB"
    assert later < freed - 100_000, f"{freed} KiB resident before the trims, {later} KiB after"


@pytest.mark.skipif(not heap.is_glibc(), reason="malloc_trim is glibc's")
def test_a_users_allocator_settings_are_not_trimmed() -> None:
    freed, later = resident_after_burst({**without_user_settings(), "GLIBC_TUNABLES": ""})
    assert later > freed - 10_000, f"{freed} KiB resident before, {later} KiB after"


# --- when to trim ------------------------------------------------------------------------------

BUSY = 0.5  # a share of a CPU: well above QUIET_SHARE


def looks(schedule: heap.TrimSchedule, shares: list[float]) -> list[bool]:
    """`due` at each look, TRIM_CHECK seconds apart from 0, after using `shares[i]` of a CPU."""
    trims = []
    now = cpu = 0.0
    for share in shares:
        now += heap.TRIM_CHECK
        cpu += share * heap.TRIM_CHECK
        trims.append(schedule.due(now, cpu))
    return trims


def test_a_command_trims_once_when_it_goes_quiet_after_starting() -> None:
    assert looks(heap.TrimSchedule(0.0, 0.0), [0.0, 0.0, 0.0]) == [True, False, False]


def test_the_end_of_a_transfer_is_trimmed_at_the_next_look() -> None:
    schedule = heap.TrimSchedule(0.0, 0.0)
    assert looks(schedule, [0.0, BUSY, BUSY, 0.0, 0.0, heap.QUIET_SHARE / 2]) == [
        True, False, False, True, False, False]


def test_a_busy_process_is_trimmed_every_trim_every_seconds() -> None:
    per_interval = round(heap.TRIM_EVERY / heap.TRIM_CHECK)
    trims = looks(heap.TrimSchedule(0.0, 0.0), [BUSY] * (3 * per_interval))
    assert [i + 1 for i, due in enumerate(trims) if due] == [per_interval, 2 * per_interval,
                                                            3 * per_interval]


def test_a_quiet_process_is_still_trimmed_every_trim_every_seconds() -> None:
    """Slow frees while quiet (an idle stream closing now and then) go back too."""
    per_interval = round(heap.TRIM_EVERY / heap.TRIM_CHECK)
    trims = looks(heap.TrimSchedule(0.0, 0.0), [0.0] * (2 * per_interval + 1))
    assert [i + 1 for i, due in enumerate(trims) if due] == [1, per_interval + 1,
                                                            2 * per_interval + 1]


def test_the_looks_space_out_while_quiet_and_close_up_when_busy() -> None:
    """An idle node is not woken every TRIM_CHECK seconds for nothing."""
    schedule = heap.TrimSchedule(0.0, 0.0)
    now = cpu = 0.0
    intervals = []
    for share in [BUSY, 0.0, 0.0, 0.0, 0.0, 0.0, BUSY, 0.0]:
        now += schedule.interval
        cpu += share * schedule.interval
        schedule.due(now, cpu)
        intervals.append(schedule.interval)
    check, most = heap.TRIM_CHECK, heap.TRIM_CHECK_MAX
    assert intervals == [check, 2 * check, 4 * check, most, most, most, check, 2 * check]
    assert most == 4 * check


def test_a_burst_in_a_quiet_spell_is_trimmed_soon_after_it_ends() -> None:
    schedule = heap.TrimSchedule(0.0, 0.0)
    now = cpu = 0.0
    while schedule.interval < heap.TRIM_CHECK_MAX:  # quiet long enough for the widest spacing
        now += schedule.interval
        schedule.due(now, cpu)
    # a 3-second transfer at half a CPU starts 1 s into the next interval
    burst_end = now + 4.0
    cpu += 0.5 * 3.0
    trims = []
    while now < burst_end + heap.TRIM_EVERY:
        now += schedule.interval
        if schedule.due(now, cpu):
            trims.append(now)
    assert trims and trims[0] - burst_end <= heap.TRIM_CHECK_MAX + heap.TRIM_CHECK
    assert trims[0] > burst_end
