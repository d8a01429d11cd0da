"""`ptunnel ping NAME`: round trips to a peer through the tunnel, and the path taken."""

from __future__ import annotations

import argparse
from typing import Any

from tunnel.cli.arguments import name_arg
from tunnel.cli.context import Context
from tunnel.cli.control import query, running
from tunnel.cli.runtime import add_node_options, build_tunnel, run_async
from tunnel.errors import UserError

NAME = "ping"
ORDER = 31
HELP = "measure round trips to a peer and show the path"


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

    def on_reply(seq: int, rtt: float | None, path: str) -> None:
        if rtt is None:
            ctx.out(f"no reply from {args.name} seq={seq}")
        else:
            ctx.out(f"reply from {args.name} seq={seq} rtt={rtt * 1e3:.2f} ms via {path}")

    async def main() -> None:
        async with tunnel:
            results.update(await tunnel.ping(args.name, count=args.count, interval=args.interval,
                                             on_reply=None if args.json else on_reply))

    run_async(main)
    return _report(args, ctx, results, printed=True)


def _report(args: argparse.Namespace, ctx: Context, results: dict[str, Any],
            printed: bool = False) -> int:
    if args.json:
        ctx.out_json(results)
    else:
        rtt = results.get("rtt_ms")
        summary = (f"rtt min/median/max {rtt['min']:.2f}/{rtt['median']:.2f}/{rtt['max']:.2f} ms"
                   if isinstance(rtt, dict) else "no rtt")
        via = "" if printed else f", via {results.get('path')}"
        ctx.out(f"{results.get('received')}/{results.get('sent')} replies from {args.name}, "
                f"{summary}{via}")
    return 0 if results.get("received") else 1
