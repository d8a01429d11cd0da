"""`python -m bench.latency_floor`: its report, and `--pin` putting every thread of a process
tree on one CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from bench.latency_floor import pin, report
from bench.procs import process_tree

# A child that starts a thread and a grandchild, says the grandchild's pid, then waits.
TREE = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(grandchild.pid, flush=True)
time.sleep(60)
"""


def affinities(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(task)) for task in os.listdir(f"/proc/{pid}/task")]


def test_every_thread_of_a_tree_lands_on_the_cpu_and_a_gone_process_is_skipped() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    target = cpus[-1]
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    grandchild = None
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        tree = process_tree([child.pid])
        assert tree == {child.pid, grandchild}
        assert len(affinities(child.pid)) == 2  # the main thread and the sleeping one
        if len(cpus) > 1:
            assert affinities(child.pid)[0] == set(cpus)  # not pinned before
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        pin([*tree, gone.pid], target)
        for pid in tree:
            assert affinities(pid) == [{target}] * len(affinities(pid))
    finally:
        if grandchild is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.wait()


def test_the_report_sets_each_p50_against_the_baseline() -> None:
    lines = report({"ssh -L": [100.0, 120.0, 140.0], "ptunnel": [240.0, 260.0, 900.0]},
                   "ssh -L")
    assert lines[0].split()[-3:] == ["1.00x", "ssh", "-L"]
    assert "p50    260 µs" in lines[1] and "p99    887 µs" in lines[1]  # interpolated
    assert lines[1].split()[-3] == "2.17x"
