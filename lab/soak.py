"""A soak test: many tunnels left running through real NATs while things break around them.

    python -m lab.soak --minutes 20 --tunnels 20 --out DIR        (root; `make soak`)
    python -m lab.soak --idle --minutes 60 --out DIR              (`make soak IDLE=1`)

The NAT lab (lab/netns.py) gets two port-restricted cone NATs and a rendezvous on the public side.
Behind the "home" NAT, an echo service listens on N ports and `ptunnel up` daemons expose them
(machines of one household): `home-a` half of them, the rest `home-b`, `home-c`, ... (a node holds
at most 8 names, `rendezvous.protocol.MAX_NAMES`: 20 tunnels take 8 + 6 + 6). Behind the "laptop"
NAT one `ptunnel up` holds all N connects, and a client (lab/soakload.py) opens a TCP connection
on every tunnel every second, sends a random payload and checks the echo by SHA-256. It also
holds one connection open on every tunnel for the whole run (a *held session*, as an ssh session
left open), silent but for a checked echo every 30 s; one that fails is replaced at once. A
held session must outlive everything but a restart of its own exposing daemon.

`--idle` is a user's quiet day instead: no new connection but one per tunnel every `--every` s
(default 300), the held sessions probed as often, nothing restarted but the rendezvous, and the
home NAT rebooting once, at a third of the run and two thirds (at least 10 minutes, and 4
intervals). Each event's recovery is then counted to the first connection after it, up to one
interval later.

Why more than one exposing daemon: `home-b`, `home-c`, ... are the ones restarted (the recovery
under test), while `home-a`, like the laptop's daemon, lives through the whole run, NAT reboot
and rendezvous restart included, so its memory and fds can be judged over the full length.

Events, on the schedule of `plan()`: every 2 minutes an exposing daemon restarts, alternately by
SIGTERM and SIGKILL (home-b clean, home-b kill, home-c clean, home-c kill, ...); once the home NAT
reboots (`Lab.reboot_nat`: conntrack flushed, new mappings on other ports); once the rendezvous
restarts (SIGTERM, same database). An event waits for the previous one to recover (or for its
bound to pass) so that recoveries are not mixed up.

While it runs it samples every ptunnel process (RSS from /proc/PID/status, open fds from
/proc/PID/fd, CPU), asks each node's control socket for its status every 10 s (`status.jsonl`),
and keeps every process's log (`logs/ROLE.GENERATION.log`). At the end it scans the logs for
tracebacks and writes `soak.json` (figures; see lab/soakreport.py for how each is computed) and
`soak.png` (RSS and fds over time; needs matplotlib, the `bench` extra). The exit status is 0 if
every criterion passed, else 1 with the reasons on one line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab.netns import RDV_IP, Lab, netns_available, reap_stale_labs
from lab.soakload import END_GRACE
from lab.soakprocs import ENV, SAMPLE_EVERY, AttemptLog, Daemon, Sampler, snapshot_status
from lab.soakreport import (
    BOUNDS,
    INTEGRITY,
    Attempt,
    EventRecord,
    HeldProbe,
    Slack,
    as_dict,
    count_log_lines,
    growth,
    held_tally,
    phases,
    recovery,
    tally,
    verdict,
)
from rendezvous.protocol import MAX_NAMES

ROOT = Path(__file__).resolve().parent.parent
RENDEZVOUS = f"{RDV_IP}:7000"
SERVICE_BASE = 9000  # echo services at home: 127.0.0.1:9000 + i
LOCAL_BASE = 20000  # the laptop's forwarded ports: 127.0.0.1:20000 + i

LONG_RUN = 600.0  # s; from here on the 2-minute cadence, full warm-up and no slack
RESTART_EVERY = 120.0  # s between restarts of the exposing daemon in a long run
SHORT_SLACK = Slack(rss_kib=2 * 1024, fds=4)
SETTLE = 5.0  # s past an event's bound before the next event may start anyway
BUSY_MARGIN = 2.0  # s after an event's recovery (or bound) whose samples are left out of growth
CONNECTION_TIMEOUT = 35.0  # s; above the connect side's 30 s wait for a tunnel
READY_TIMEOUT = 90.0  # s for the set-up: every name exposed, every connect ready
UP_TIMEOUT = 60.0  # s for a restarted process to be up again
HELD_EVERY = 30.0  # s between the probes of a held session in a busy run
IDLE_EVERY = 300.0  # s between an idle run's connections and probes (`--every`)
IDLE_PERIODS = 4  # an idle run lasts at least this many intervals: a use after each event


def say(text: str) -> None:
    print(f"soak: {text}", flush=True)


# --- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    seconds: float
    events: tuple[tuple[float, str], ...]  # (nominal time since t0, kind)
    warmup: float  # s after a process's start before its memory is judged
    window: float  # s of quiet samples whose median stands for the start and for the end
    slack: Slack


def plan(seconds: float, idle_every: float | None = None) -> Plan:
    """A long run: a restart every 2 minutes, the NAT reboot and the rendezvous restart halfway
    between two restarts at about 1/3 and 2/3 of the run. A short run (2 .. 10 minutes): each
    event once (clean restart, SIGKILL restart, rendezvous restart, NAT reboot), evenly spaced,
    the last one 40 s before the end so that its 30 s bound fits. Two minutes is the least in
    which the long-lived processes get 2 windows of quiet samples after warm-up. An idle run
    (`idle_every`: the interval between uses): the NAT reboot at a third of the run and the
    rendezvous restart at two thirds, nothing else."""
    if seconds < 120:
        raise ValueError("a soak needs at least 2 minutes")
    if idle_every is not None:
        least = max(LONG_RUN, IDLE_PERIODS * idle_every)
        if seconds < least:
            raise ValueError(f"an idle soak needs at least {least / 60:g} minutes: 10, and "
                             f"{IDLE_PERIODS} intervals of --every {idle_every:g} s")
        quiet = ((seconds / 3, "nat-reboot"), (2 * seconds / 3, "rendezvous-restart"))
        return Plan(seconds, quiet, 120.0, 60.0, Slack())
    if seconds < LONG_RUN:
        first, last = max(15.0, 0.12 * seconds), seconds - 40.0
        kinds = ("restart-clean", "restart-kill", "rendezvous-restart", "nat-reboot")
        times = [first + i * (last - first) / 3 for i in range(4)]
        return Plan(seconds, tuple(zip(times, kinds, strict=True)), 30.0, 20.0, SHORT_SLACK)
    restarts = [RESTART_EVERY * k for k in range(1, int((seconds - 60) // RESTART_EVERY) + 1)]
    events = [(t, "restart-clean" if i % 2 == 0 else "restart-kill")
              for i, t in enumerate(restarts)]
    between = [t + RESTART_EVERY / 2 for t in restarts[:-1]]
    nat = next(t for t in between if t >= seconds / 3)
    rdv = next(t for t in between if t >= 2 * seconds / 3 and t != nat)
    events += [(nat, "nat-reboot"), (rdv, "rendezvous-restart")]
    return Plan(seconds, tuple(sorted(events)), 120.0, 60.0, Slack())


# --- the run ----------------------------------------------------------------------------------
def ptunnel(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tunnel", *argv]


def make_homes(base: Path, names: Sequence[str]) -> dict[str, Path]:
    """One network: a founder's invite joined by every node (as the lab tests do)."""
    def run(*argv: str) -> str:
        done = subprocess.run(ptunnel(*argv), capture_output=True, text=True, check=False,
                              env={**os.environ, **ENV})
        if done.returncode != 0:
            raise RuntimeError(f"ptunnel {argv[0]} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    run("init", "--home", str(base / "founder"))
    code = run("invite", "--home", str(base / "founder"))
    homes = {name: base / name for name in names}
    for home in homes.values():
        run("join", code, "--home", str(home))
    return homes


def write_config(path: Path, exposes: Sequence[int] = (), connects: Sequence[int] = ()) -> None:
    lines = [f"rendezvous: {RENDEZVOUS}"]
    if exposes:
        lines.append("expose:")
        lines += [f"  - port: {SERVICE_BASE + i}\n    as: soak-{i:02d}" for i in exposes]
    if connects:
        lines.append("connect:")
        lines += [f"  - name: soak-{i:02d}\n    listen: {LOCAL_BASE + i}" for i in connects]
    path.write_text("\n".join(lines) + "\n")


def split_tunnels(tunnels: int) -> list[list[int]]:
    """Tunnels per exposing daemon: the first (never restarted) holds half, at most MAX_NAMES
    (the names one node may register); the rest are spread evenly over as few daemons as the
    limit allows."""
    first = min(MAX_NAMES, tunnels // 2)
    rest = list(range(first, tunnels))
    count = -(-len(rest) // MAX_NAMES)
    return [list(range(first))] + [rest[i::count] for i in range(count)]


class Soak:
    def __init__(self, lab: Lab, tunnels: int, out: Path, plan: Plan,
                 verbose: bool = False, idle_every: float | None = None) -> None:
        self.lab, self.tunnels, self.out, self.plan = lab, tunnels, out, plan
        self.idle_every = idle_every
        self.home_site, self.laptop_site = lab.sites[0], lab.sites[1]
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.verbose = ["-v"] if verbose else []
        self.events: list[EventRecord] = []
        self.restarts = 0
        self.attempts = AttemptLog(out / "attempts.jsonl")
        self.held = AttemptLog(out / "held.jsonl")
        self.daemons: list[Daemon] = []
        # home-a, home-b, ...: (daemon, its tunnels); home-a is never restarted.
        self.exposers: list[tuple[Daemon, list[int]]] = []

    def clock(self) -> float:
        return time.monotonic() - self.t0

    def daemon(self, label: str, ns: str, argv: list[str], home: Path | None = None,
               sampled: bool = True) -> Daemon:
        d = Daemon(label, ns, argv, self.out / "logs", self.clock, home, sampled)
        self.daemons.append(d)
        return d

    # --- set-up -------------------------------------------------------------------------------
    def set_up(self, state: Path) -> None:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        groups = split_tunnels(self.tunnels)
        labels = [f"home-{chr(ord('a') + i)}" for i in range(len(groups))]
        homes = make_homes(state, [*labels, "laptop"])
        self.rdv = self.daemon("rendezvous", self.lab.rdv, ptunnel(
            "rendezvous", "--listen", RENDEZVOUS, "--db", str(state / "rendezvous.db"),
            "--home", str(state / "rdv-home"), *self.verbose))
        self.services = self.daemon("services", self.home_site.host, [
            sys.executable, "-m", "lab.soakload", "serve", str(SERVICE_BASE), str(self.tunnels)],
            sampled=False)
        for label, group in zip(labels, groups, strict=True):
            write_config(state / f"{label}.yaml", exposes=group)
            self.exposers.append((self.daemon(label, self.home_site.host, ptunnel(
                "up", "-c", str(state / f"{label}.yaml"), "--home", str(homes[label]),
                *self.verbose), home=homes[label]), group))
        write_config(state / "laptop.yaml", connects=range(self.tunnels))
        self.laptop = self.daemon("laptop", self.laptop_site.host, ptunnel(
            "up", "-c", str(state / "laptop.yaml"), "--home", str(homes["laptop"]),
            *self.verbose), home=homes["laptop"])
        self.rdv.start()
        self.rdv.wait_lines("rendezvous listening", 1, 15, anywhere=True)
        self.services.start()
        self.services.wait_lines("listening", 1, 15)
        for exposer, _group in self.exposers:
            exposer.start()
        started = [d for d in self.daemons if d.series]
        for exposer, group in self.exposers:
            exposer.wait_lines("exposing", len(group), READY_TIMEOUT, started)
        self.laptop.start()
        self.laptop.wait_lines("ready:", self.tunnels, READY_TIMEOUT, [*started, self.laptop])

    # --- events -------------------------------------------------------------------------------
    def restart(self, daemon: Daemon, sig: int, ready: str, count: int,
                details: dict[str, Any], anywhere: bool = False) -> float | None:
        with self.lock:
            details.update(process=daemon.current.name, **daemon.stop(sig))
            daemon.start()
        try:
            daemon.wait_lines(ready, count, UP_TIMEOUT, anywhere=anywhere)
        except RuntimeError as exc:
            details["not_up"] = str(exc)
            return None
        return self.clock()

    def event(self, kind: str) -> EventRecord:
        record = EventRecord(len(self.events) + 1, kind, self.clock(), None, [],
                             next_use=self.idle_every or 0.0)
        say(f"t={record.at:6.1f} s  event {record.index}: {kind}")
        if kind in ("restart-clean", "restart-kill"):
            # home-b clean, home-b kill, home-c clean, home-c kill, ...
            restartable = self.exposers[1:]
            exposer, record.tunnels = restartable[(self.restarts // 2) % len(restartable)]
            self.restarts += 1
            sig = signal.SIGTERM if kind == "restart-clean" else signal.SIGKILL
            record.reference = self.restart(exposer, sig, "exposing", len(record.tunnels),
                                            record.details)
        elif kind == "rendezvous-restart":
            record.tunnels = list(range(self.tunnels))
            up = self.restart(self.rdv, signal.SIGTERM, "rendezvous listening", 1,
                              record.details, anywhere=True)
            record.details["up_s"] = None if up is None else round(up - record.at, 2)
            record.reference = record.at
        else:
            record.tunnels = list(range(self.tunnels))
            first, last = self.lab.reboot_nat(self.home_site)
            record.details["nat"] = f"home: conntrack -F, new mappings on ports {first}-{last}"
            record.reference = record.at
        if record.reference is not None and kind.startswith("restart"):
            record.details["up_s"] = round(record.reference - record.at, 2)
        self.events.append(record)
        return record

    def settle(self, record: EventRecord) -> None:
        """Wait until every touched tunnel carried a connection again, or the bound passed."""
        if record.reference is None:
            return
        give_up = record.reference + record.bound + SETTLE
        while self.clock() < give_up:
            attempts = self.parsed()
            if recovery(record, attempts, math.inf)["recovered"]:
                return
            time.sleep(0.5)
        record.details["status_when_not_recovered"] = snapshot_status(self.daemons, self.clock)

    def parsed(self) -> list[Attempt]:
        return [Attempt.from_json(e, self.t0) for e in self.attempts.poll()]

    # --- the whole run ------------------------------------------------------------------------
    def run(self) -> None:
        self.t0 = time.monotonic()
        every = self.idle_every or HELD_EVERY
        driver = self.daemon("client", self.laptop_site.host, [
            sys.executable, "-m", "lab.soakload", "drive", str(LOCAL_BASE), str(self.tunnels),
            "--seconds", str(self.plan.seconds + 600), "--out", str(self.out / "attempts.jsonl"),
            "--timeout", str(CONNECTION_TIMEOUT), "--rate", str(1 / (self.idle_every or 1.0)),
            "--held-every", str(every), "--held-out", str(self.out / "held.jsonl")],
            sampled=False)
        sampler = Sampler(self.daemons, self.out / "status.jsonl", self.clock, self.lock)
        driver.start()
        sampler.start()
        try:
            for nominal, kind in self.plan.events:
                while self.clock() < nominal:
                    time.sleep(0.2)
                self.settle(self.event(kind))
            while self.clock() < self.plan.seconds:
                time.sleep(0.2)
            say(f"t={self.clock():6.1f} s  stopping the client")
            with self.lock:
                driver.stop(signal.SIGTERM, wait=END_GRACE + 10)
        finally:
            sampler.done.set()
            sampler.join()
        self.end = self.clock()

    def tear_down(self) -> dict[str, Any]:
        """Stop every process (a clean stop: SIGTERM); how each went."""
        return {d.current.name: d.stop(signal.SIGTERM) for d in reversed(self.daemons)
                if d.series}

    # --- the report ---------------------------------------------------------------------------
    def report(self, stops: dict[str, Any]) -> dict[str, Any]:
        attempts = [a for a in self.parsed() if a.start < self.end]
        events, windows = [], []
        for i, record in enumerate(self.events):
            until = self.events[i + 1].at if i + 1 < len(self.events) else self.end
            rec = recovery(record, attempts, until)
            windows.append((record.at, rec.pop("window_end")))
            events.append({**as_dict(record), **rec})
        for event in events:
            event["at_s"] = round(event.pop("at"), 2)
            ref = event.pop("reference")
            event["reference_s"] = None if ref is None else round(ref, 2)
        connections = tally(attempts)
        connections["phases"] = phases(self.events, windows, attempts)
        connections["integrity_examples"] = [
            asdict(a) for a in attempts if a.result in INTEGRITY][:20]
        probes = [HeldProbe.from_json(e, self.t0) for e in self.held.poll()]
        held = held_tally([p for p in probes if p.start < self.end], self.events)
        connections["failed_examples"] = [
            asdict(a) for a in attempts if a.result not in ("ok", "unfinished")][:20]
        processes = []
        window = round(self.plan.window / SAMPLE_EVERY)
        # An idle run's window lasts until the tunnels' next use; the event is over sooner.
        busy = [(start, min(end, start + BOUNDS[e.kind]) + BUSY_MARGIN)
                for e, (start, end) in zip(self.events, windows, strict=True)]
        for d in self.daemons:
            for s in d.series if d.sampled else []:
                processes.append({
                    "name": s.name, "label": s.label, "generation": s.generation, "pid": s.pid,
                    "started_s": round(s.started, 2),
                    "ended_s": None if s.ended is None else round(s.ended, 2),
                    "exit_code": s.exit_code,
                    "cpu_s": round(s.samples[-1][3] - s.samples[0][3], 1) if s.samples else None,
                    "growth": growth(s, self.plan.warmup, window, self.plan.slack, busy),
                    "samples": s.samples})
        logs = scan_logs(self.out / "logs")
        crashed = [f"{s.name} (exit {s.exit_code})" for d in self.daemons for s in d.series
                   if s.exited_on_its_own]
        failures = verdict(connections, events, processes, logs, crashed, held)
        return {
            "passed": not failures,
            "failures": failures,
            "settings": {"seconds": self.plan.seconds, "tunnels": self.tunnels,
                         "idle": self.idle_every is not None,
                         "exposers": {d.label: group for d, group in self.exposers},
                         "connections_per_s_per_tunnel": 1 / (self.idle_every or 1.0),
                         "held_probe_every_s": self.idle_every or HELD_EVERY,
                         "connection_timeout_s": CONNECTION_TIMEOUT,
                         "sample_every_s": SAMPLE_EVERY, "warmup_s": self.plan.warmup,
                         "window_s": self.plan.window,
                         "growth_leaves_out": "samples from an event until "
                                              f"{BUSY_MARGIN:g} s after its recovery, or after "
                                              "its bound if that is sooner",
                         "slack": {"rss_kib": self.plan.slack.rss_kib,
                                   "fds": self.plan.slack.fds},
                         "bounds_s": {e["kind"]: e["bound_s"] for e in events}},
            "duration_s": round(self.end, 1),
            "events": events,
            "connections": connections,
            "held_sessions": held,
            "processes": processes,
            "logs": logs,
            "exited_on_their_own": crashed,
            "final_stops": stops,
        }


def scan_logs(directory: Path) -> dict[str, Any]:
    total = {"tracebacks": 0, "hidden_tracebacks": 0}
    files_with, examples, sizes = [], [], {}
    for path in sorted(directory.glob("*.log")):
        with open(path, encoding="utf-8", errors="replace") as log:
            found = count_log_lines(log)
        for key, (count, lines) in found.items():
            total[key] += count
            examples += [f"{path.name}: {line}" for line in lines]
        if any(count for count, _ in found.values()):
            files_with.append(path.name)
        sizes[path.name] = path.stat().st_size
    return {**total, "files_with": files_with, "examples": examples[:20], "bytes": sizes}


def plot(report: dict[str, Any], png: Path) -> str:
    """RSS and fds of every ptunnel process over time, the events as vertical lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is missing (pip install '.[bench]')"
    fig, (rss_ax, fd_ax) = plt.subplots(2, 1, sharex=True, figsize=(11, 7))
    colors: dict[str, str] = {}  # one colour a role; its successive processes share it
    for proc in report["processes"]:
        samples = proc["samples"]
        if samples:
            first = proc["label"] not in colors
            color = colors.setdefault(proc["label"], f"C{len(colors) % 10}")
            t = [s[0] for s in samples]
            label = proc["label"] if first else None
            rss_ax.plot(t, [s[1] / 1024 for s in samples], color=color, label=label, lw=1)
            fd_ax.plot(t, [s[2] for s in samples], color=color, lw=1)
    for event in report["events"]:
        for ax in (rss_ax, fd_ax):
            ax.axvline(event["at_s"], color="grey", linestyle=":", linewidth=0.8)
        rss_ax.annotate(event["kind"], (event["at_s"], 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, va="top", ha="right", color="grey")
    rss_ax.set_ylabel("RSS (MiB)")
    fd_ax.set_ylabel("open fds")
    fd_ax.set_xlabel("seconds since the tunnels were up")
    rss_ax.legend(fontsize=8, ncol=5, loc="lower right")
    verdict_text = "PASS" if report["passed"] else "FAIL"
    rss_ax.set_title(f"ptunnel soak: {report['settings']['tunnels']} tunnels, "
                     f"{report['duration_s'] / 60:.1f} min: {verdict_text}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return f"plot: {png}"


def summary(report: dict[str, Any]) -> list[str]:
    c = report["connections"]
    lines = [f"connections: {c['attempted']} attempted, {c['succeeded']} ok, {c['failed']} "
             f"failed, {c['integrity_failures']} integrity failures; "
             f"{c['bytes_checked'] / 1e6:.1f} MB checked both ways; {c['by_result']}"]
    for e in report["events"]:
        up = e["details"].get("up_s")
        lines.append(f"event {e['index']} {e['kind']:<19} at {e['at_s']:6.1f} s  "
                     f"{'' if up is None else f'up after {up} s, '}recovery {e['recovery_s']} s "
                     f"(bound {e['bound_s']:.0f} s; from the event {e['recovery_from_event_s']} "
                     "s)")
    h = report["held_sessions"]
    lines.append(f"held sessions: {h['sessions']} sessions, {h['probes']} probes, "
                 f"{h['succeeded']} ok, {h['failed_at_a_restart']} failed at a restart of their "
                 f"exposing daemon, {h['failed_unexplained']} failed otherwise, "
                 f"{h['integrity_failures']} integrity failures; the longest carried data for "
                 f"{h['longest_session_s']:g} s")
    steady = c["phases"][0]
    lines.append(f"steady state: {steady['failed']} failed, {steady['integrity_failures']} "
                 "integrity failures (outside every event's window)")
    for phase in c["phases"]:
        lines.append(f"  {phase['phase']:<32} {phase['attempted']:5} attempted "
                     f"{phase['succeeded']:5} ok {phase['failed']:4} failed "
                     f"{phase['integrity_failures']} integrity")
    for p in report["processes"]:
        g = p["growth"]
        cpu = f"cpu {p['cpu_s']:6.1f} s  " if p["cpu_s"] is not None else ""
        if g["judged"]:
            lines.append(f"{p['name']:<14} {cpu}rss {g['rss']['first_kib'] / 1024:6.1f} -> "
                         f"{g['rss']['last_kib'] / 1024:6.1f} MiB ({g['rss']['growth_pct']:+}%)  "
                         f"fds {g['fds']['first']:g} -> {g['fds']['last']:g} "
                         f"({g['fds']['growth_pct']:+}%)  {'flat' if g['flat'] else 'GREW'}")
        else:
            lines.append(f"{p['name']:<14} {cpu}not judged: {g['why']}")
    logs = report["logs"]
    lines.append(f"logs: {logs['tracebacks']} tracebacks, {logs['hidden_tracebacks']} hidden "
                 "ones (`run with -v for details`)")
    return lines


def run_soak(lab: Lab, minutes: float, tunnels: int, out: Path, verbose: bool = False,
             idle_every: float | None = None) -> dict[str, Any]:
    """Run the soak in `lab` (two cone sites); write soak.json and soak.png into `out`. With
    `idle_every`, the idle run: a connection and a probe per tunnel every `idle_every` s."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("attempts.jsonl", "held.jsonl", "status.jsonl"):
        (out / stale).unlink(missing_ok=True)
    soak = Soak(lab, tunnels, out, plan(minutes * 60, idle_every), verbose, idle_every)
    with tempfile.TemporaryDirectory(prefix="soak-") as state:
        stops: dict[str, Any] = {}
        try:
            say(f"setting up {tunnels} tunnels")
            soak.set_up(Path(state))
            say(f"all {tunnels} tunnels ready; running {minutes:g} min"
                + ("" if idle_every is None else f", idle: a use every {idle_every:g} s"))
            soak.run()
        finally:
            stops = soak.tear_down()
        report = soak.report(stops)
    report["plot"] = plot(report, out / "soak.png")
    (out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.soak", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--tunnels", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak")
    parser.add_argument("--idle", action="store_true",
                        help="a quiet day: a connection and a held-session probe per tunnel "
                             "every --every s, a NAT reboot and a rendezvous restart, nothing "
                             "else (at least 10 minutes and 4 intervals long)")
    parser.add_argument("--every", type=float, default=IDLE_EVERY,
                        help=f"seconds between uses in an idle run (default {IDLE_EVERY:g})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="run the ptunnel processes with -v (tracebacks in full)")
    parser.add_argument("--summary", action="store_true",
                        help="run nothing: print the figures of OUT/soak.json, redraw its plot")
    args = parser.parse_args(argv)
    if args.summary:
        try:
            report = json.loads((args.out / "soak.json").read_text())
        except (OSError, ValueError) as exc:
            say(f"no figures to show: {args.out / 'soak.json'}: {exc}")
            return 2
        for line in [*summary(report), plot(report, args.out / "soak.png")]:
            say(line)
        return 0 if report["passed"] else 1
    if not 2 <= args.tunnels <= 100:
        parser.error("--tunnels must be 2 .. 100")
    if not 10 <= args.every <= 3600:
        parser.error("--every must be 10 .. 3600 seconds")
    idle_every = args.every if args.idle else None
    try:
        plan(args.minutes * 60, idle_every)
    except ValueError as exc:
        parser.error(str(exc))
    ok, why = netns_available()
    if not ok:
        say(f"FAIL: the NAT lab is unavailable here: {why}")
        return 2
    reap_stale_labs()
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: tear everything down
    try:
        with Lab(["cone", "cone"], prefix=f"ptl{os.getpid()}x0") as lab:
            report = run_soak(lab, args.minutes, args.tunnels, args.out, args.verbose,
                              idle_every)
    except RuntimeError as exc:  # the set-up failed: a process did not come up
        say(f"FAIL: set-up: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; every process stopped and the lab removed")
        return 130
    for line in summary(report):
        say(line)
    say(report["plot"])
    say(f"figures: {args.out / 'soak.json'}")
    if report["passed"]:
        say("PASS")
        return 0
    say("FAIL: " + "; ".join(report["failures"]))
    return 1


if __name__ == "__main__":
    sys.exit(main())
