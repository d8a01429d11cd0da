"""`ptunnel ping NAME`: round trips to a peer through the tunnel, and the path taken."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable
from typing import Any

from tunnel.api import Tunnel
from tunnel.cli.context import Context
from tunnel.cli.control import query, running
from tunnel.cli.runtime import add_node_options, build_tunnel
from tunnel.errors import UserError
from tunnel.node.peer import PeerLink
from tunnel.node.udp import monotonic

NAME = "ping"
ORDER = 31
HELP = "measure round trips to a peer and show the path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the name the peer exposes")
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

    async def main() -> None:
        async with tunnel:
            results.update(await ping(tunnel, args.name, args.count, args.interval,
                                      None if args.json else ctx.out))

    import uvloop

    uvloop.run(main())
    return _report(args, ctx, results, printed=True)


def _report(args: argparse.Namespace, ctx: Context, results: dict[str, Any],
            printed: bool = False) -> int:
    if args.json:
        ctx.out_json(results)
    elif not printed:
        rtt = results.get("rtt_ms")
        summary = (f"rtt min/median/max {rtt['min']:.2f}/{rtt['median']:.2f}/{rtt['max']:.2f} ms"
                   if isinstance(rtt, dict) else "no rtt")
        ctx.out(f"{results.get('received')}/{results.get('sent')} replies from {args.name}, "
                f"{summary}, via {results.get('path')}")
    return 0 if results.get("received") else 1


async def _one_ping(tunnel: Tunnel, link: PeerLink, wait: float) -> float | None:
    """Send one path ping and wait up to `wait` seconds for its answer."""
    link.rtt = None
    tunnel.node.ping(link)
    deadline = monotonic() + wait
    while monotonic() < deadline:
        await asyncio.sleep(0.002)
        answered = link.last_rtt()  # set by the node when the pong arrives
        if answered is not None:
            return answered
    return None


async def ping(tunnel: Tunnel, name: str, count: int, interval: float,
               out: Callable[[str], None] | None) -> dict[str, Any]:
    """Ping `name` through the path the tunnel finds to it (no local port is opened)."""
    connection = await tunnel.reach(name)
    link = connection.link
    assert link is not None
    rtts: list[float] = []
    for seq in range(count):
        rtt = await _one_ping(tunnel, link, max(interval, 0.2))
        if rtt is not None:
            rtts.append(rtt * 1e3)
            if out is not None:
                out(f"reply from {name} seq={seq} rtt={rtt * 1e3:.2f} ms "
                    f"via {link.describe_path().split(', rtt')[0]}")
        elif out is not None:
            out(f"no reply from {name} seq={seq}")
        await asyncio.sleep(max(0.0, interval - (rtt or 0.0)))
    summary: dict[str, Any] = {
        "name": name, "sent": count, "received": len(rtts), "path": link.describe_path(),
        "direct": bool(link.path.path and link.path.path.direct),
        "rtt_ms": {"min": min(rtts), "median": statistics.median(rtts), "max": max(rtts)}
        if rtts else None,
        "candidates": [{"addr": f"{r.addr[0]}:{r.addr[1]}", "kind": r.kind,
                        "probes": r.probes_sent, "working": r.working}
                       for r in link.path.report(monotonic())],
    }
    if out is not None and rtts:
        out(f"{len(rtts)}/{count} replies, rtt min/median/max "
            f"{min(rtts):.2f}/{statistics.median(rtts):.2f}/{max(rtts):.2f} ms")
    await connection.close()
    return summary
