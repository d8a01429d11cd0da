"""How much of ptunnel's latency is its shape and how much its work.

`python -m bench.latency_floor` measures the 64-byte ping-pong of `make bench` through `ssh -L`,
through the copy relay (`bench/copy_relay.py`: ptunnel's two processes, four crossings and six
hops per round trip, on uvloop, doing nothing but copy) and through ptunnel, in alternating
rounds on loopback, and prints each one's p50 and p99 and their ratios to `ssh -L`. If the copy
relay is about as fast as `ssh -L`, the shape costs nothing in Python, and what separates ptunnel
from `ssh -L` is ptunnel's own work at each crossing. Not part of the suite.

With `--pin` each side gets a CPU of its own, as on two machines: this load generator and each
path's client side (`ssh`, the connecting node, the relay's connecting end) on the first CPU, the
echo server and each path's server side on the second. Unpinned, the scheduler places the four
processes of a round trip as it likes, and a placement can slow one path more than another.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable
from typing import Final

from bench.load import latency
from bench.paths.base import Adapter, Target
from bench.paths.copy_relay import CopyRelay
from bench.paths.ptunnel import Ptunnel
from bench.paths.ssh import Ssh
from bench.procs import Child, Unavailable, json_field, process_tree
from bench.stats import median, percentile

CLIENT_ROLES: Final = frozenset({"connect", "ssh"})  # a path's processes on the load's machine


def pin(pids: Iterable[int], cpu: int) -> None:
    """Every thread of `pids` on `cpu` alone (affinity is per thread; a process that is gone
    meanwhile is skipped)."""
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(task), {cpu})


def pin_like_two_machines(paths: list[Adapter], sink: Child, near: int, far: int) -> None:
    """The load generator (this process) and the paths' client sides on CPU `near`, the echo
    server and the server sides (with their descendants: sshd forks per session) on `far`."""
    pin(process_tree([os.getpid()]), near)  # everything this process started, to begin with
    server_sides = [child.pid for path in paths
                    for role, child in path.processes().items() if role not in CLIENT_ROLES]
    pin(process_tree([sink.pid, *server_sides]), far)


def report(results: dict[str, list[float]], baseline: str) -> list[str]:
    """One line per path: pooled p50 and p99 (µs) and the p50's ratio to `baseline`'s."""
    base = median(results[baseline])
    return [f"{name:11s} p50 {median(s):6.0f} µs  p99 {percentile(s, 99.0):6.0f} µs  "
            f"p50 {median(s) / base:4.2f}x {baseline}" for name, s in results.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_floor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--round-trips", type=int, default=3000, help="a round's (default 3000)")
    parser.add_argument("--pin", action="store_true",
                        help="each side on a CPU of its own, as on two machines (see above)")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) < 2:
        parser.error("--pin needs two CPUs, and this process may run on one only")
    sink = Child("sink", [sys.executable, "-m", "bench.sink"])
    paths: list[Adapter] = [Ssh(), CopyRelay(), Ptunnel()]
    try:
        target = Target("127.0.0.1", sink.wait_line(json_field("port", int), 10.0))
        ports = {path.name: path.start(target) for path in paths}
        if args.pin:
            pin_like_two_machines(paths, sink, cpus[0], cpus[1])
        results: dict[str, list[float]] = {path.name: [] for path in paths}
        for round_number in range(args.rounds):
            order = paths if round_number % 2 == 0 else paths[::-1]
            for path in order:
                samples = latency(ports[path.name], args.round_trips)
                results[path.name].extend(samples)
                print(f"round {round_number + 1}/{args.rounds} {path.name}: "
                      f"p50 {median(samples):.0f} µs", flush=True)
        print("\n".join(report(results, Ssh.name)))
    except Unavailable as exc:
        print(f"latency_floor: a path cannot run here: {exc}", file=sys.stderr)
        return 1
    finally:
        for path in reversed(paths):
            path.stop()
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
