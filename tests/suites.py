"""`make test`'s pytest runs: what `make unit` and `make unit-pure` run, in less time.

    python -m tests.suites [PYTEST ARGS]          # every suite (`make test`)
    python -m tests.suites --pure [PYTEST ARGS]   # the pure build's suite (`make unit-pure`)

The NAT lab's tests spend most of their time waiting on real timers (an idle tunnel watched for
95 s, a two-minute soak). Beside them run the tests on virtual time, of both builds: the sans-IO
core driven by a simulated link and a simulated clock, with no sockets, processes, signals or
timing bounds (`VIRTUAL`; `tests/test_architecture.py` keeps them so). They run at the lowest CPU
priority (`nice 19`), so they take only CPU the lab leaves idle, and a lab process that wakes
takes its CPU back at once. The other real-time tests (the CLI's processes, the forwarders and
the rendezvous on loopback) then run one run at a time, each build in turn.

The pure build's run leaves out what runs whole ptunnel processes (`PURE_SKIPS`): the NAT lab, the
CLI's tests and the rendezvous fleet's test processes, arguments and exit codes; the core inside
them differs between the builds, and the pure build's in-process tests cover its core.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ("tests/lab",)
VIRTUAL = ("tests/channel", "tests/session", "tests/path", "tests/keys")
PURE_SKIPS = ("tests/lab", "tests/cli", "tests/rendezvous/test_multi_server.py",
              "tests/rendezvous/test_server_cli.py")
BESIDE_LOG = ROOT / "build" / "virtual-time.log"
NO_TESTS_COLLECTED = 5  # pytest's exit status


@dataclass(frozen=True)
class Run:
    label: str
    paths: tuple[str, ...] = ()  # what to run (nothing: everything not ignored)
    ignore: tuple[str, ...] = ()
    pure: bool = False

    def argv(self, extra: Sequence[str], beside: bool = False) -> list[str]:
        argv = [sys.executable, "-m", "pytest", *(f"--ignore={p}" for p in self.ignore)]
        if beside:  # its own temporary directory and no cache: the lab's run owns those
            argv = ["nice", "-n", "19", *argv, "-p", "no:cacheprovider",
                    f"--basetemp={ROOT / 'build' / 'pytest-beside'}"]
        return [*argv, *extra, *self.paths]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PTUNNEL_PURE": "1"} if self.pure else dict(os.environ)


@dataclass
class Outcome:
    label: str
    status: int
    seconds: float

    def passed(self, filtered: bool) -> bool:
        # A run that collects nothing fails, unless the caller's arguments (-k, a path) chose.
        return self.status == 0 or (filtered and self.status == NO_TESTS_COLLECTED)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(spec: Run, extra: Sequence[str]) -> Outcome:
    say(f"\n=== {spec.label} ===")
    started = time.monotonic()
    proc = subprocess.Popen(spec.argv(extra), cwd=ROOT, env=spec.env())
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # it had the interrupt too, and stops after its teardown (the lab's netns)
        raise
    return Outcome(spec.label, status, time.monotonic() - started)


class Beside:
    """Runs `specs` one after another at the lowest priority, their output into a log file;
    `outcomes` has one per spec once joined (a run that could not start counts as failed)."""

    def __init__(self, specs: Sequence[Run], extra: Sequence[str], log: Path) -> None:
        self.specs, self.extra, self.log = specs, extra, log
        self.outcomes: list[Outcome] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self.lock = threading.Lock()  # stop() and the start of the next run: one or the other
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.log.parent.mkdir(exist_ok=True)
        with self.log.open("wb") as log:
            for spec in self.specs:
                log.write(f"\n=== {spec.label} ===\n".encode())
                log.flush()
                started = time.monotonic()
                with self.lock:
                    if self.stopped:
                        return
                    # A session of its own: the runner's interrupt reaches it through stop().
                    try:
                        self.proc = subprocess.Popen(
                            spec.argv(self.extra, beside=True), cwd=ROOT, env=spec.env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    except OSError as exc:
                        log.write(f"cannot start it: {exc}\n".encode())
                        self.proc = None
                status = -1 if self.proc is None else self.proc.wait()
                self.outcomes.append(Outcome(spec.label, status, time.monotonic() - started))

    def join(self) -> list[Outcome]:
        self.thread.join()
        missing = [Outcome(spec.label, -1, 0.0) for spec in self.specs[len(self.outcomes):]]
        return [*self.outcomes, *missing]

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            proc = self.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.suites", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pure", action="store_true",
                        help="only the pure-Python build's suite (`make unit-pure`)")
    args, extra = parser.parse_known_args(argv)
    filtered = bool(extra)
    pure_rest = Run("the pure-Python build's other tests", ignore=(*PURE_SKIPS, *VIRTUAL),
                    pure=True)
    if args.pure:
        outcomes = [run(Run("the pure-Python build", ignore=PURE_SKIPS, pure=True), extra)]
    else:
        beside = Beside([Run("tests on virtual time, default build", VIRTUAL),
                         Run("tests on virtual time, pure-Python build", VIRTUAL, pure=True)],
                        extra, BESIDE_LOG)
        say("tests on virtual time, both builds, beside the NAT lab at the lowest priority "
            f"(their output: {BESIDE_LOG.relative_to(ROOT)}, shown when the lab is done)")
        beside.thread.start()
        try:
            outcomes = [run(Run("the NAT lab, default build", LAB), extra)]
            outcomes += beside.join()
        finally:
            beside.stop()
        say(BESIDE_LOG.read_text(errors="replace"))
        outcomes.append(run(Run("the default build's other tests", ignore=(*LAB, *VIRTUAL)),
                            extra))
        outcomes.append(run(pure_rest, extra))
    say("\n=== summary ===")
    for outcome in outcomes:
        verdict = "passed" if outcome.passed(filtered) else f"FAILED (exit {outcome.status})"
        say(f"{outcome.label}: {verdict} in {outcome.seconds:.0f} s")
    return 0 if all(o.passed(filtered) for o in outcomes) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every run was stopped (the lab's after its teardown)
        sys.stderr.write("tests interrupted\n")
        sys.exit(130)
