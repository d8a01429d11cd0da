"""`ptunnel ping NAME`: round trips to a peer through the tunnel, one line per reply with the path
it took, and statistics like ping(8) at the end (after `-n N` pings, or at Ctrl-C). A ping that
got no answer says where it was lost: `no session` (no established session with the peer),
`no path` (a session but no path to send on) or `no answer` (sent, not answered in time).

Through a running node the replies arrive as events on its control socket, as they come."""

from __future__ import annotations

import argparse
import math
import signal
import statistics
from typing import Any

from tunnel.api import PingResult
from tunnel.cli.arguments import name_arg
from tunnel.cli.context import Context
from tunnel.cli.handoff import ask, running_node
from tunnel.cli.runtime import Interrupted, add_node_options, build_tunnel, run_async

NAME = "ping"
ORDER = 31
HELP = "round trips to a peer, and the path they take"
DESCRIPTION = """\
Ping NAME through the tunnel (through the running `expose`, `connect` or `up` of this user if
there is one, else from a node of its own) and print each reply with the path it took and its
round trip, then statistics as ping(8) prints them: sent, received, loss, rtt min/avg/max/mdev.
Ctrl-C ends it early with the statistics so far. A ping with no reply says where it was lost:
`no session` (no established session with the peer), `no path` (a session but no path to send
it on) or `no answer` (sent on the path shown, not answered in time). With --json, `lost` counts
each reason (`no_session`, `no_path`, `no_answer`) and `replies` has one entry per ping. Exits 1
when no ping was answered.

  ptunnel ping ssh-home
  ptunnel ping ssh-home -n 100 -i 0.2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", type=name_arg,
                        help="the name the peer exposes (case-insensitive)")
    # ping(8) says -c N, but -c is every command's --config here: -n N, as Windows' ping.
    parser.add_argument("-n", "--count", dest="count", type=_count, default=5,
                        metavar="N", help="pings to send (default 5); Ctrl-C ends early")
    parser.add_argument("-i", "--interval", type=float, default=0.5, metavar="SECONDS",
                        help="seconds between pings (default 0.5)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_node_options(parser)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of pings (1 or more)")
    return int(text)


def run(args: argparse.Namespace, ctx: Context) -> int:
    replies: list[dict[str, Any]] = []

    def on_reply(reply: dict[str, Any]) -> None:
        replies.append(reply)
        if not args.json:
            ctx.out(_reply_line(args.name, reply))

    try:
        summary = _ping(args, ctx, on_reply)
    except Interrupted as exc:
        if exc.signum != signal.SIGINT or not replies:
            raise  # SIGTERM, or Ctrl-C before the first ping: a plain stop
        summary = {"name": args.name, "interrupted": True}
    summary.update(ping_statistics(replies))
    summary["replies"] = replies
    if args.json:
        ctx.out_json(summary)
    else:
        ctx.out(f"--- {args.name} ping statistics ---")
        ctx.out(_statistics_line(summary))
    return 0 if summary["received"] else 1


def _ping(args: argparse.Namespace, ctx: Context, on_reply: Any) -> dict[str, Any]:
    node = running_node(ctx.home)
    if node is not None:
        # A node already runs with this key: ask it, rather than start a second node that
        # would fight it for the peer's session. Its replies stream back as they come.
        return ask(node, {"cmd": "ping", "name": args.name, "count": args.count,
                          "interval": args.interval},
                   timeout=args.interval + 40,  # the longest silence: finding the peer first
                   on_event=lambda event: on_reply(event["reply"]) if "reply" in event else None)
    tunnel = build_tunnel(ctx)
    results: dict[str, Any] = {}

    def on_result(seq: int, result: PingResult) -> None:
        on_reply(result.as_dict(seq))

    async def main() -> None:
        async with tunnel:
            results.update(await tunnel.ping(args.name, count=args.count, interval=args.interval,
                                             on_result=on_result))

    run_async(main)
    return results


def ping_statistics(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """ping(8)'s numbers from the replies so far: sent, received, loss; rtt min, avg, max and
    mdev (the standard deviation, as ping computes it); the lost ones counted by reason."""
    rtts = [float(r["rtt_ms"]) for r in replies if r.get("rtt_ms") is not None]
    lost: dict[str, int] = {"no_session": 0, "no_path": 0, "no_answer": 0}
    for reply in replies:
        if reply.get("lost") is not None:
            lost[str(reply["lost"])] = lost.get(str(reply["lost"]), 0) + 1
    rtt: dict[str, float] | None = None
    if rtts:
        avg = sum(rtts) / len(rtts)
        mdev = math.sqrt(max(0.0, sum(x * x for x in rtts) / len(rtts) - avg * avg))
        rtt = {"min": min(rtts), "avg": round(avg, 3), "max": max(rtts),
               "mdev": round(mdev, 3), "median": statistics.median(rtts)}
    return {"sent": len(replies), "received": len(rtts), "rtt_ms": rtt, "lost": lost,
            "loss_percent": round(100.0 * (len(replies) - len(rtts)) / len(replies), 1)
            if replies else 0.0}


def _reply_line(name: str, reply: dict[str, Any]) -> str:
    seq, path, lost = reply.get("seq"), reply.get("path"), reply.get("lost")
    if lost is None:
        return f"reply from {name} seq={seq} rtt={reply.get('rtt_ms'):.2f} ms via {path}"
    where = "" if path in (None, "no path") else f" (path {path})"
    return f"no reply from {name} seq={seq}: {str(lost).replace('_', ' ')}{where}"


def _statistics_line(summary: dict[str, Any]) -> str:
    """`5 sent, 4 received, 20% loss (1 no answer), rtt min/avg/max/mdev = …, via direct …`."""
    lost = ", ".join(f"{count} {reason.replace('_', ' ')}"
                     for reason, count in summary["lost"].items() if count)
    line = (f"{summary['sent']} sent, {summary['received']} received, "
            f"{summary['loss_percent']:g}% loss{f' ({lost})' if lost else ''}")
    rtt = summary.get("rtt_ms")
    if rtt:
        line += (f", rtt min/avg/max/mdev = {rtt['min']:.3f}/{rtt['avg']:.3f}/"
                 f"{rtt['max']:.3f}/{rtt['mdev']:.3f} ms")
    state = summary.get("state")
    if summary.get("interrupted") or summary.get("path") is None:
        return line
    if state in (None, "direct", "relay"):
        return f"{line}, via {str(summary['path']).split(', rtt')[0]}"  # the RTTs are above
    return f"{line}, peer {state}"
