"""`ptunnel status`: what the running instances on this machine are doing."""

from __future__ import annotations

import argparse
from typing import Any

from tunnel.cli.context import Context
from tunnel.cli.control import query_all

NAME = "status"
ORDER = 30
HELP = "show running tunnels: peers, paths, RTT, bytes, streams"
DESCRIPTION = """\
Ask every running `ptunnel expose`, `connect` and `up` of this user (through their control
sockets under $PTUNNEL_HOME/run) for their peers, paths (direct or relay, and for a relayed peer
which candidates were tried), RTT, bytes each way, open streams and uptime.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def _describe(instance: dict[str, Any]) -> list[str]:
    names = ", ".join(instance.get("names") or []) or "(no names)"
    lines = [f"pid {instance['pid']}  node {instance['fingerprint']}  names {names}  "
             f"public {instance.get('public_endpoint') or '?'}  up {instance['uptime_s']:.0f} s"]
    for peer in instance.get("peers", []):
        who = peer.get("name") or peer["fingerprint"]
        lines.append(f"  {who}: {peer['path']}  sent {_size(peer['bytes_sent'])}  "
                     f"received {_size(peer['bytes_received'])}  streams {peer['open_streams']}")
        if not peer.get("direct"):
            for candidate in peer.get("candidates", []):
                state = "works" if candidate["working"] else "no answer"
                lines.append(f"    tried {candidate['addr']} ({candidate['kind']}): "
                             f"{candidate['probes']} probes, {state}")
    return lines


def run(args: argparse.Namespace, ctx: Context) -> int:
    instances = query_all(ctx.home)
    if args.json:
        ctx.out_json(instances)
        return 0
    if not instances:
        ctx.out("no ptunnel running for this user (start one with `ptunnel expose` or "
                "`ptunnel connect`)")
        return 0
    for instance in instances:
        for line in _describe(instance):
            ctx.out(line)
    return 0
