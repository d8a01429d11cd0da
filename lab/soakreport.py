"""The soak's figures and verdict, computed from what it recorded (pure: no processes, no clock).

`lab.soak` records three things: every client connection (`Attempt`, from lab/soakload.py), every
event it caused (`EventRecord`) and samples of every ptunnel process (`ProcessSeries`). This
module turns them into the figures of the JSON report and the pass/fail verdict:

- **Recovery** of an event: for every tunnel it touched, the end of the first successful
  connection *started* at or after the event's reference time (a restarted process's "up", or
  the event itself for a NAT reboot or a rendezvous restart); the event's recovery is the slowest
  tunnel's. A tunnel with no success before the next event (or the end) did not recover.
- **Phases**: a connection belongs to the event window it started in (from the event until every
  touched tunnel recovered, or the next event), else to `steady`.
- **Growth** of a process: the median of its first window of samples after warm-up against the
  median of the last window of its life, for RSS and open fds, leaving out samples taken while
  an event was under way; judged only if it lived long enough for both windows.
- **Held sessions** (one long-lived connection per tunnel, probed now and then): a failed probe
  is *explained* when a restart of its tunnel's exposing daemon came after its session opened
  and before the probe ended (that process held the connection); any other failure is not.
- **Verdict**: no integrity failure, every judged process flat, no traceback, every event
  recovered within its bound (`BOUNDS`, plus the time until a tunnel is next used in an idle
  run), no held session failed unexplained.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Recovery bounds in seconds, from the reference time (see the module docstring).
BOUNDS = {
    "restart-clean": 5.0,  # the old process said goodbye: the peer can know at once
    "restart-kill": 15.0,  # the peer must notice silence or a new handshake
    "nat-reboot": 30.0,  # every mapping gone: detect the dead path, re-register, re-punch
    "rendezvous-restart": 30.0,  # re-register with a server that forgot the live endpoints
}
# Results of lab/soakload.py: bytes lost or changed behind a clean EOF, or a plain failure.
INTEGRITY = ("corrupt", "truncated", "empty")
FAILED = ("refused", "reset", "timeout")
GROWTH_LIMIT = 0.10  # a process may grow 10 % from its first window after warm-up to its last


@dataclass(frozen=True, slots=True)
class Slack:
    """Absolute growth allowed on top of GROWTH_LIMIT, for runs too short for 10 % to mean
    anything: a one-off step (a module imported on the first NAT reboot, a cache's first fill,
    a few connections still in flight in the last window) is a few MiB and a few fds, while a
    leak of one fd or one buffer per connection is hundreds within two minutes. The long run
    (`make soak`) uses no slack."""

    rss_kib: int = 0
    fds: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    tunnel: int
    serial: int
    start: float  # s since the soak's t0
    end: float
    bytes: int
    result: str
    echoed: int
    error: str = ""

    @classmethod
    def from_json(cls, entry: dict[str, Any], t0: float) -> Attempt:
        return cls(int(entry["tunnel"]), int(entry["serial"]), float(entry["start"]) - t0,
                   float(entry["end"]) - t0, int(entry["bytes"]), str(entry["result"]),
                   int(entry.get("echoed", 0)), str(entry.get("error", "")))


@dataclass(frozen=True, slots=True)
class HeldProbe:
    """One probe of a held session (lab/soakload.py), or how a session failed between probes
    (then `bytes` is 0 and `start` == `end`)."""

    tunnel: int
    session: int  # 1 for the tunnel's first connection, 2 for the one that replaced it, ...
    opened: float  # s since t0: the session's connection was opened
    serial: int
    start: float
    end: float
    bytes: int
    result: str
    echoed: int
    error: str = ""

    @classmethod
    def from_json(cls, entry: dict[str, Any], t0: float) -> HeldProbe:
        return cls(int(entry["tunnel"]), int(entry["session"]), float(entry["opened"]) - t0,
                   int(entry["serial"]), float(entry["start"]) - t0, float(entry["end"]) - t0,
                   int(entry["bytes"]), str(entry["result"]), int(entry.get("echoed", 0)),
                   str(entry.get("error", "")))


@dataclass
class EventRecord:
    index: int
    kind: str
    at: float  # s since t0: the signal, the conntrack flush
    reference: float | None  # recovery is measured from here; None: the new process never came up
    tunnels: list[int]  # the tunnels it touched
    details: dict[str, Any] = field(default_factory=dict)
    next_use: float = 0.0  # s until a tunnel is used again after it (an idle run's interval)

    @property
    def bound(self) -> float:
        return BOUNDS[self.kind] + self.next_use


@dataclass
class ProcessSeries:
    label: str  # role, e.g. "home-b"
    generation: int  # 1 for the first process of the role, 2 after a restart, ...
    pid: int
    started: float  # s since t0 (negative: started during set-up)
    ended: float | None = None
    exit_code: int | None = None
    exited_on_its_own: bool = False  # nobody stopped it: it crashed
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)
    # (t, RSS KiB, open fds, CPU s)

    @property
    def name(self) -> str:
        return f"{self.label}#{self.generation}"


# --- recovery and phases ----------------------------------------------------------------------
def first_success(attempts: Iterable[Attempt], tunnel: int, since: float,
                  until: float) -> Attempt | None:
    """The successful connection of `tunnel` started in [since, until) that ended first."""
    found = [a for a in attempts
             if a.tunnel == tunnel and a.result == "ok" and since <= a.start < until]
    return min(found, key=lambda a: a.end, default=None)


def recovery(event: EventRecord, attempts: Sequence[Attempt], until: float) -> dict[str, Any]:
    """How long after its reference every touched tunnel carried a connection again."""
    per_tunnel: dict[str, float | None] = {}
    if event.reference is not None:
        for tunnel in event.tunnels:
            first = first_success(attempts, tunnel, event.reference, until)
            per_tunnel[str(tunnel)] = None if first is None else max(0.0, first.end -
                                                                       event.reference)
    done = bool(per_tunnel) and all(v is not None for v in per_tunnel.values())
    slowest = max((v for v in per_tunnel.values() if v is not None), default=None)
    recovery_s = slowest if done else None
    return {
        "recovered": done,
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "recovery_from_event_s": None if recovery_s is None or event.reference is None
        else round(recovery_s + event.reference - event.at, 2),
        "within_bound": done and recovery_s is not None and recovery_s <= event.bound,
        "per_tunnel_s": {k: None if v is None else round(v, 2) for k, v in per_tunnel.items()},
        "window_end": (event.reference + recovery_s) if recovery_s is not None
        and event.reference is not None else until,
    }


def tally(attempts: Iterable[Attempt]) -> dict[str, Any]:
    counted = [a for a in attempts if a.result != "unfinished"]
    by_result: dict[str, int] = {}
    for a in counted:
        by_result[a.result] = by_result.get(a.result, 0) + 1
    ok = [a for a in counted if a.result == "ok"]
    return {
        "attempted": len(counted),
        "succeeded": len(ok),
        "failed": sum(by_result.get(r, 0) for r in FAILED),
        "integrity_failures": sum(by_result.get(r, 0) for r in INTEGRITY),
        "bytes_checked": sum(a.bytes for a in ok),  # each checked on the way there and back
        "by_result": dict(sorted(by_result.items())),
    }


def phases(events: Sequence[EventRecord], windows: Sequence[tuple[float, float]],
           attempts: Sequence[Attempt]) -> list[dict[str, Any]]:
    """Connection counts of the steady state and of each event's window."""
    def window_of(a: Attempt) -> int | None:
        for i, (start, end) in enumerate(windows):
            if start <= a.start < end:
                return i
        return None

    groups: dict[int | None, list[Attempt]] = {}
    for a in attempts:
        groups.setdefault(window_of(a), []).append(a)
    out = [{"phase": "steady", **tally(groups.get(None, []))}]
    for i, event in enumerate(events):
        start, end = windows[i]
        out.append({"phase": f"event {event.index}: {event.kind}",
                    "window_s": [round(start, 2), round(end, 2)], **tally(groups.get(i, []))})
    return out


# --- held sessions ----------------------------------------------------------------------------
def explained(probe: HeldProbe, events: Iterable[EventRecord]) -> bool:
    """A restart of the probe's own exposing daemon came while its session was open."""
    return any(e.kind.startswith("restart") and probe.tunnel in e.tunnels
               and probe.opened < e.at <= probe.end for e in events)


def held_tally(probes: Iterable[HeldProbe], events: Sequence[EventRecord]) -> dict[str, Any]:
    """The held sessions' probes: how many, how each ended, which failures no restart of the
    session's own exposing daemon explains, and how long the longest session carried data."""
    counted = [p for p in probes if p.result != "unfinished"]
    by_result: dict[str, int] = {}
    for p in counted:
        by_result[p.result] = by_result.get(p.result, 0) + 1
    failed = [p for p in counted if p.result != "ok"]
    # An integrity failure is never explained; it is counted on its own.
    unexplained = [p for p in failed if p.result not in INTEGRITY and not explained(p, events)]
    lived: dict[tuple[int, int], float] = {}
    for p in counted:
        if p.result == "ok":
            key = (p.tunnel, p.session)
            lived[key] = max(lived.get(key, 0.0), p.end - p.opened)
    return {
        "sessions": len({(p.tunnel, p.session) for p in counted}),
        "probes": len(counted),
        "succeeded": len(counted) - len(failed),
        "failed_at_a_restart": sum(explained(p, events) for p in failed
                                   if p.result not in INTEGRITY),
        "failed_unexplained": len(unexplained),
        "integrity_failures": sum(by_result.get(r, 0) for r in INTEGRITY),
        "longest_session_s": round(max(lived.values(), default=0.0), 1),
        "by_result": dict(sorted(by_result.items())),
        "unexplained_examples": [asdict(p) for p in failed
                                 if p.result in INTEGRITY or p in unexplained][:20],
    }


# --- processes --------------------------------------------------------------------------------
def parse_status_kib(text: str, key: str) -> int | None:
    """A "Key:  123 kB" value of /proc/PID/status, in KiB."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return None


def parse_cpu_ticks(stat: str) -> int:
    """utime + stime from /proc/PID/stat (the command name may hold spaces and parentheses)."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def growth(series: ProcessSeries, warmup: float, window: int, slack: Slack,
           busy: Sequence[tuple[float, float]] = ()) -> dict[str, Any]:
    """RSS and fd growth of one process: the median of its first `window` quiet samples after
    `warmup` s against the median of its last `window` quiet samples. Samples taken while an
    event was under way (`busy` intervals) are left out: connections waiting for a tunnel hold
    fds and buffers for a while, which is not growth; what an event leaks stays after it."""
    quiet = [s for s in series.samples if s[0] >= series.started + warmup
             and not any(start <= s[0] <= end for start, end in busy)]
    if len(quiet) < 2 * window:
        lived = series.samples[-1][0] - series.started if series.samples else 0.0
        return {"judged": False,
                "why": f"lived {lived:.0f} s, {len(quiet)} quiet samples after a warm-up of "
                       f"{warmup:.0f} s; needs 2 x {window}"}
    first, last = quiet[:window], quiet[-window:]
    out: dict[str, Any] = {"judged": True,
                           "first_window_s": [round(first[0][0], 1), round(first[-1][0], 1)],
                           "last_window_s": [round(last[0][0], 1), round(last[-1][0], 1)]}
    flat = True
    for key, column, extra in (("rss", 1, slack.rss_kib), ("fds", 2, slack.fds)):
        before = statistics.median(s[column] for s in first)
        after = statistics.median(s[column] for s in last)
        allowed = max(GROWTH_LIMIT * before, extra)
        ok = after - before <= allowed
        flat = flat and ok
        unit = "_kib" if key == "rss" else ""
        out[key] = {f"first{unit}": before, f"last{unit}": after,
                    "growth_pct": round(100 * (after - before) / before, 1) if before else None,
                    f"allowed_growth{unit}": round(allowed, 1), "flat": ok}
    out["flat"] = flat
    return out


def count_log_lines(lines: Iterable[str], keep: int = 3) -> dict[str, tuple[int, list[str]]]:
    """Lines of a log that show an unexpected exception: a printed traceback, or the CLI's one-
    line summary of one (`... (run with -v for details)`, a traceback hidden at info level).
    Per kind: how many, and the first `keep` of them (a log can be hundreds of MB)."""
    found: dict[str, tuple[int, list[str]]] = {"tracebacks": (0, []), "hidden_tracebacks": (0, [])}
    for line in lines:
        kind = ("tracebacks" if "Traceback" in line
                else "hidden_tracebacks" if "run with -v for details" in line else None)
        if kind is not None:
            count, examples = found[kind]
            if count < keep:
                examples.append(line.rstrip("\n")[:300])
            found[kind] = (count + 1, examples)
    return found


# --- the verdict ------------------------------------------------------------------------------
def verdict(connections: dict[str, Any], events: Sequence[dict[str, Any]],
            processes: Sequence[dict[str, Any]], logs: dict[str, Any],
            crashed: Sequence[str] = (), held: dict[str, Any] | None = None) -> list[str]:
    """Why the soak failed, one short reason per broken criterion; empty if it passed."""
    reasons = [f"{', '.join(crashed)} exited on its own"] if crashed else []
    if connections["integrity_failures"]:
        reasons.append(f"{connections['integrity_failures']} connections lost or corrupted "
                       "bytes behind a clean EOF")
    if connections["succeeded"] == 0:
        reasons.append("no connection succeeded")
    if held is not None:
        if held["integrity_failures"]:
            reasons.append(f"{held['integrity_failures']} probes of held sessions lost or "
                           "corrupted bytes")
        if held["failed_unexplained"]:
            reasons.append(f"{held['failed_unexplained']} probes of held sessions failed with "
                           "no restart of their exposing daemon to explain it")
        if held["succeeded"] == 0:
            reasons.append("no held session answered a probe")
    for event in events:
        if not event["recovered"]:
            reasons.append(f"event {event['index']} ({event['kind']}) did not recover")
        elif not event["within_bound"]:
            reasons.append(f"event {event['index']} ({event['kind']}) recovered in "
                           f"{event['recovery_s']} s > {event['bound_s']:.0f} s")
    if processes and not any(proc["growth"].get("judged") for proc in processes):
        reasons.append("no process lived long enough to judge its growth")
    for proc in processes:
        g = proc["growth"]
        if g.get("judged") and not g["flat"]:
            grew = [f"{key} {g[key]['growth_pct']}%" for key in ("rss", "fds")
                    if not g[key]["flat"]]
            reasons.append(f"{proc['name']} grew: {', '.join(grew)}")
    shown = logs["tracebacks"] + logs["hidden_tracebacks"]
    if shown:
        reasons.append(f"{shown} tracebacks in the logs ({', '.join(logs['files_with'])})")
    return reasons


def as_dict(record: EventRecord) -> dict[str, Any]:
    out = asdict(record)
    out["bound_s"] = record.bound
    return out
