"""Child processes for the benchmark: start-until-ready, stop, CPU time and memory from /proc.

Every process the suite starts goes through `Child`, so the suite can always stop what it started
(SIGTERM, then SIGKILL after a grace period). The /proc parsers are pure and unit-tested.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 3.0  # a tunnel gets this long to exit on SIGTERM before SIGKILL
TCP_LISTEN = "0A"  # st column of /proc/net/tcp for a listening socket

T = TypeVar("T")


class Unavailable(Exception):
    """A path cannot run on this machine; the message says why (shown as "unavailable: ...")."""


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime: own CPU plus that of reaped children


def parse_proc_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat; the command name may contain spaces and parentheses."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()
    # fields[0] is state (field 3 of proc(5)); ppid is field 4, utime..cstime are fields 14..17.
    ppid = int(fields[1])
    cpu = sum(int(f) for f in fields[11:15])
    return ProcStat(pid, ppid, cpu)


def parse_status_kib(text: str, key: str) -> int | None:
    """A "Key:  123 kB" value of /proc/PID/status, in KiB."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def parse_listening_ports(text: str) -> set[int]:
    """Ports in LISTEN state from the text of /proc/net/tcp or /proc/net/tcp6."""
    ports: set[int] = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[3] == TCP_LISTEN:
            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:  # the process exited between listing and reading: skip it
        return None


def all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            text = _read(f"/proc/{entry}/stat")
            if text is not None:
                stat = parse_proc_stat(text)
                stats[stat.pid] = stat
    return stats


def process_tree(roots: Iterable[int]) -> set[int]:
    """The roots and all their live descendants."""
    stats = all_stats()
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = [r for r in roots if r in stats]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds used so far by the processes `pids` and their live descendants."""
    stats = all_stats()
    ticks = sum(stats[p].cpu_ticks for p in process_tree(pids) if p in stats)
    return ticks / CLOCK_TICKS


def memory_kib(pid: int, key: str) -> int | None:
    """VmRSS (now) or VmHWM (peak) of one process, in KiB."""
    text = _read(f"/proc/{pid}/status")
    return None if text is None else parse_status_kib(text, key)


def pss_kib(pid: int) -> int | None:
    """Proportional set size: resident memory with shared pages split among their sharers."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    return None if text is None else parse_status_kib(text, "Pss")


def tree_memory_kib(pid: int) -> int:
    """Memory of a process and its live descendants (e.g. socat's forked children), as PSS so
    that pages a fork shares with its parent are not counted once per child (RSS if no PSS)."""
    total = 0
    for p in process_tree([pid]):
        pss = pss_kib(p)
        total += pss if pss is not None else memory_kib(p, "VmRSS") or 0
    return total


def listening_ports(pid: int | None = None) -> set[int]:
    """TCP ports listening in our network namespace, or in that of process `pid`."""
    base = "/proc/net" if pid is None else f"/proc/{pid}/net"
    ports: set[int] = set()
    for name in (f"{base}/tcp", f"{base}/tcp6"):
        text = _read(name)
        if text is not None:
            ports |= parse_listening_ports(text)
    return ports


class Child:
    """A started process whose stdout lines are collected by a reader thread."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, cwd=cwd, start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._err.append(raw.decode(errors="replace").rstrip("\n"))
            del self._err[:-20]  # keep the tail only: enough to explain a failure

    def stderr_tail(self) -> str:
        return " | ".join(self._err[-3:])

    def wait_line(self, accept: Callable[[str], T | None], timeout: float) -> T:
        """Wait for a stdout line that `accept` turns into a value; Unavailable on exit/timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"{self.name} not ready after {timeout:.0f} s "
                                  f"{self.stderr_tail()}".rstrip())
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                time.sleep(0.05)  # let the stderr thread catch the last words
                raise Unavailable(f"{self.name} exited ({self.proc.poll()}): "
                                  f"{self.stderr_tail()}")
            value = accept(line)
            if value is not None:
                return value

    def wait_started(self, settle: float) -> None:
        """For a server that may print nothing: fine if it prints or is still alive after `settle`
        seconds; Unavailable if it exits first."""
        try:
            self.wait_line(lambda line: line, settle)
        except Unavailable:
            if self.proc.poll() is not None:
                raise

    def wait_listening(self, port: int, timeout: float) -> None:
        """Wait until something listens on TCP `port` in this child's network namespace (checked
        in /proc, without connecting, so a fork-per-connection relay is not disturbed)."""
        deadline = time.monotonic() + timeout
        while port not in listening_ports(self.proc.pid):
            if self.proc.poll() is not None:
                time.sleep(0.05)
                raise Unavailable(f"{self.name} exited ({self.proc.returncode}): "
                                  f"{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise Unavailable(f"{self.name} not listening on {port} after {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_ok(argv: Sequence[str], timeout: float = 30.0, cwd: str | None = None,
           env: Mapping[str, str] | None = None) -> str:
    """Run a set-up command; its stdout, or Unavailable with the tail of its stderr."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout, cwd=cwd,
                              env=full_env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise Unavailable(f"`{' '.join(argv[:3])}` failed ({done.returncode}): {err[0]}")
    return done.stdout.decode(errors="replace")


def json_field(key: str, kind: type[T]) -> Callable[[str], T | None]:
    """A `wait_line` acceptor: the `key` of a one-line JSON object, if it has the right type."""

    def accept(line: str) -> T | None:
        try:
            value = json.loads(line)
        except ValueError:
            return None
        field = value.get(key) if isinstance(value, dict) else None
        return field if isinstance(field, kind) else None

    return accept
