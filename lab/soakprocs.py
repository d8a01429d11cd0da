"""The soak's processes: a role played by successive processes in a namespace (`Daemon`), the
thread that samples their memory, fds and status (`Sampler`), and the client's results file read
as it grows (`AttemptLog`). Every process is started and signalled by its own pid, never by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lab.soakreport import ProcessSeries, parse_cpu_ticks, parse_status_kib
from tunnel.cli.control import query

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT)}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 2.0  # s between /proc samples
STATUS_EVERY = 10.0  # s between control-socket status snapshots
STOP_WAIT = 5.0  # s a process gets to exit on SIGTERM (ptunnel promises 1 s)


@dataclass
class Daemon:
    """A role played by successive processes in one namespace (a restart is a new generation),
    each with its own log file."""

    label: str
    ns: str
    argv: list[str]
    logs: Path
    clock: Callable[[], float]
    home: Path | None = None  # a ptunnel node's state directory (for its control socket)
    sampled: bool = True  # a ptunnel process: its memory and fds are recorded
    generation: int = 0
    popen: subprocess.Popen[bytes] | None = None
    series: list[ProcessSeries] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.label}.{self.generation}.log"

    @property
    def current(self) -> ProcessSeries:
        return self.series[-1]

    def start(self) -> None:
        self.generation += 1
        with open(self.log_path, "wb") as log:  # the child writes to its own copy
            self.popen = subprocess.Popen(["ip", "netns", "exec", self.ns, *self.argv],
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env={**os.environ, **ENV})
        self.series.append(ProcessSeries(self.label, self.generation, self.popen.pid,
                                         self.clock()))

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_lines(self, text: str, count: int, timeout: float, others: Sequence[Daemon] = (),
                   anywhere: bool = False) -> None:
        """Wait until the current process's log holds `count` lines that start with `text` (the
        command's own output; log lines start with the time), or contain it if `anywhere`;
        RuntimeError if it or one of `others` exits first, or on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_path.read_text(errors="replace").splitlines()
            found = sum(text in line if anywhere else line.startswith(text) for line in lines)
            if found >= count:
                return
            for daemon in (self, *others):
                if not daemon.alive():
                    raise RuntimeError(f"{daemon.label} exited ({daemon.exit_code()}) while "
                                       f"waiting for {count} x {text!r} from {self.label}; see "
                                       f"{daemon.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: {found} of {count} x {text!r} after "
                                   f"{timeout:.0f} s; see {self.log_path}")
            time.sleep(0.1)

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def check_exit(self) -> None:
        """Notice a process that exited although nobody stopped it (a crash)."""
        if self.series and self.current.ended is None and not self.alive():
            self.current.ended, self.current.exit_code = self.clock(), self.exit_code()
            self.current.exited_on_its_own = True

    def stop(self, sig: int = signal.SIGTERM, wait: float = STOP_WAIT) -> dict[str, Any]:
        """Send `sig`, wait for the exit (SIGKILL after `wait`); how it went."""
        out: dict[str, Any] = {"signal": signal.Signals(sig).name}
        if self.popen is None or self.popen.poll() is not None:
            self.check_exit()
            return {**out, "already_exited": self.exit_code()}
        sent = time.monotonic()
        self.popen.send_signal(sig)
        try:
            self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            out["killed_after_s"] = wait
            self.popen.kill()
            self.popen.wait()
        out["stop_s"] = round(time.monotonic() - sent, 3)
        out["exit_code"] = self.popen.returncode
        self.current.ended, self.current.exit_code = self.clock(), self.popen.returncode
        return out

    def sample(self) -> None:
        if not self.sampled or self.popen is None or not self.alive():
            return
        pid = self.popen.pid
        try:
            rss = parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            cpu = parse_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS
        except (OSError, ValueError):
            return  # it exited between the check and the read
        if rss is not None:
            self.current.samples.append((round(self.clock(), 2), rss, fds, cpu))

    def status(self) -> dict[str, Any] | None:
        if self.home is None or self.popen is None or not self.alive():
            return None
        return query(self.home / "run" / f"{self.popen.pid}.sock", timeout=2.0)


class Sampler(threading.Thread):
    """Samples /proc every SAMPLE_EVERY s and the nodes' status every STATUS_EVERY s."""

    def __init__(self, daemons: Sequence[Daemon], status_file: Path,
                 clock: Callable[[], float], lock: threading.Lock) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.daemons, self.status_file, self.clock, self.lock = daemons, status_file, clock, lock
        self.done = threading.Event()

    def run(self) -> None:
        next_status = 0.0
        with open(self.status_file, "a", encoding="utf-8") as out:
            while not self.done.wait(SAMPLE_EVERY):
                with self.lock:
                    for daemon in self.daemons:
                        daemon.check_exit()
                        daemon.sample()
                if self.clock() >= next_status:
                    next_status = self.clock() + STATUS_EVERY
                    snapshot_status(self.daemons, self.clock, out)


def snapshot_status(daemons: Sequence[Daemon], clock: Callable[[], float],
                    out: IO[str] | None = None) -> dict[str, Any]:
    snapshot = {d.current.name: d.status() for d in daemons if d.home is not None and d.series}
    if out is not None:
        out.write(json.dumps({"t": round(clock(), 2), "status": snapshot}) + "\n")
        out.flush()
    return snapshot


class AttemptLog:
    """Reads the client's JSON lines as they are appended."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.entries: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            self.offset += len(complete)
            self.entries += [json.loads(line) for line in complete.splitlines() if line]
        return self.entries


