"""`ptunnel ping NAME`: round trips to a peer through the tunnel, the path taken, and for each
ping that got no answer where it was lost: `no session` (no established session with the peer),
`no path` (a session but no path to send on) or `no answer` (sent, not answered in time)."""

from __future__ import annotations

import argparse
from typing import Any

from tunnel.api import PingResult
from tunnel.cli.arguments import name_arg
from tunnel.cli.context import Context
from tunnel.cli.control import query, running
from tunnel.cli.runtime import add_node_options, build_tunnel, run_async
from tunnel.errors import UserError

NAME = "ping"
ORDER = 31
HELP = "measure round trips to a peer, show the path and where lost pings were lost"
DESCRIPTION = """\
Ping NAME through the tunnel (through the running `expose`, `connect` or `up` of this user if
there is one, else from a node of its own) and show each reply with the path it took. A ping with
no reply says where it was lost: `no session` (no established session with the peer), `no path`
(a session but no path to send it on) or `no answer` (sent on the path shown, not answered in
time). With --json, `lost` counts each reason (`no_session`, `no_path`, `no_answer`) and
`replies` has one entry per ping. Exits 1 when no ping was answered.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", type=name_arg,
                        help="the name the peer exposes (case-insensitive)")
    parser.add_argument("-n", "--count", type=int, default=5, help="pings to send (default 5)")
    parser.add_argument("-i", "--interval", type=float, default=0.5,
                        help="seconds between pings (default 0.5)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_node_options(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    instances = running(ctx.home)
    if instances:
        # A node already runs with this key: ask it, rather than start a second node that
        # would fight it for the peer's session.
        reply = query(instances[0][0], {"cmd": "ping", "name": args.name, "count": args.count,
                                        "interval": args.interval},
                      timeout=args.count * (args.interval + 1) + 40)
        if reply is None or "error" in reply:
            raise UserError((reply or {}).get("error") or "the running ptunnel did not answer")
        return _report(args, ctx, reply)
    tunnel = build_tunnel(ctx)
    results: dict[str, Any] = {}

    def on_result(seq: int, result: PingResult) -> None:
        ctx.out(_reply_line(args.name, result.as_dict(seq)))

    async def main() -> None:
        async with tunnel:
            results.update(await tunnel.ping(args.name, count=args.count, interval=args.interval,
                                             on_result=None if args.json else on_result))

    run_async(main)
    return _report(args, ctx, results, printed=True)


def _reply_line(name: str, reply: dict[str, Any]) -> str:
    seq, path, lost = reply.get("seq"), reply.get("path"), reply.get("lost")
    if lost is None:
        return f"reply from {name} seq={seq} rtt={reply.get('rtt_ms'):.2f} ms via {path}"
    where = "" if path in (None, "no path") else f" (path {path})"
    return f"no reply from {name} seq={seq}: {str(lost).replace('_', ' ')}{where}"


def _report(args: argparse.Namespace, ctx: Context, results: dict[str, Any],
            printed: bool = False) -> int:
    if args.json:
        ctx.out_json(results)
    else:
        if not printed:  # through a running node: the replies come with the summary
            for reply in results.get("replies") or []:
                ctx.out(_reply_line(args.name, reply))
        rtt = results.get("rtt_ms")
        summary = (f"rtt min/median/max {rtt['min']:.2f}/{rtt['median']:.2f}/{rtt['max']:.2f} ms"
                   if isinstance(rtt, dict) else "no rtt")
        lost = ", ".join(f"{count} {reason.replace('_', ' ')}"
                         for reason, count in (results.get("lost") or {}).items() if count)
        lost = f", lost: {lost}" if lost else ""
        state = results.get("state")
        if printed:
            via = ""
        elif state in (None, "direct", "relay"):
            via = f", via {str(results.get('path')).split(', rtt')[0]}"  # the RTTs are above
        else:
            via = f", peer {state}"
        ctx.out(f"{results.get('received')}/{results.get('sent')} replies from {args.name}, "
                f"{summary}{lost}{via}")
    return 0 if results.get("received") else 1
