"""`ptunnel status`: what the running instances on this machine are doing."""

from __future__ import annotations

import argparse
from typing import Any

from tunnel.cli.context import Context
from tunnel.cli.control import query_all
from tunnel.cli.forwards import forward_line

NAME = "status"
ORDER = 30
HELP = "show the running node: forwards, peers, paths"
DESCRIPTION = """\
Ask every running `ptunnel expose`, `connect` and `up` of this user (through their control
sockets under $PTUNNEL_HOME/run) for the rendezvous (registered or not, under which names, when it
last answered), each forward (connect or expose, its port or target, where it came from: the
config file, the command that started the node, or a command added later; and its live
connections), each peer's state (connecting, direct, relay, reconnecting, unreachable) with its
path (and for a relayed peer which candidates were tried), RTT, bytes each way, open streams and
uptime, and every connect still waiting for its peer, with why.

  ptunnel status
  ptunnel status --json            the same, for scripts
"""
LOADS_CONFIG = False  # only the state directory: a node.yaml being edited must not stop it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def _rendezvous(rdv: dict[str, Any]) -> str:
    """The server the node is registered at (or trying), then the deployment's others."""
    last = rdv.get("last_answer_s")
    heard = "no answer yet" if last is None else f"last answer {last:.0f} s ago"
    others = [s for s in rdv.get("servers") or [] if s != rdv["server"]]
    fallback = f"; fallback {', '.join(others)}" if others else ""
    if rdv.get("registered"):
        names = ", ".join(rdv.get("names") or []) or "(no names)"
        return f"rendezvous {rdv['server']}: registered {names}, {heard}{fallback}"
    asking = rdv.get("unanswered_s")
    asking_for = "" if asking is None else f" (asking for {asking:.0f} s)"
    return f"rendezvous {rdv['server']}: not registered, {heard}{asking_for}{fallback}"


def _peer_state(peer: dict[str, Any]) -> str:
    """The path while the peer is up; otherwise its state first, and the path as history."""
    state, path = peer.get("state"), peer["path"]
    if state is None or state in ("direct", "relay"):
        return str(path)  # up: the path starts with its state ("direct lan …", "relay via …")
    if path == "no path":
        return str(state)
    last = f"last path {path.split(', rtt')[0]}"  # its RTT is as old as the path
    return f"{state[:-1]}; {last})" if state.endswith(")") else f"{state} ({last})"


def _connection(connection: dict[str, Any]) -> str:
    where = connection.get("listen")
    if where is None:
        return f"{connection['name']} (ping)"
    return f"{connection['name']} on {where}{'/udp' if connection.get('udp') else ''}"


def _describe(instance: dict[str, Any]) -> list[str]:
    names = ", ".join(instance.get("names") or []) or "(no names)"
    lines = [f"pid {instance['pid']}  node {instance['fingerprint']}  names {names}  "
             f"public {instance.get('public_endpoint') or '?'}  up {instance['uptime_s']:.0f} s"]
    if instance.get("rendezvous"):
        lines.append(f"  {_rendezvous(instance['rendezvous'])}")
    for forward in instance.get("forwards", []):
        lines.append(f"  {forward_line(forward)}")
    for connection in instance.get("connections", []):
        if connection.get("ready", True):
            continue
        waited = connection.get("waiting_s")
        since = "" if waited is None else f" for {waited:.0f} s"
        lines.append(f"  waiting: {_connection(connection)}{since}: {connection.get('reason')}")
    for peer in instance.get("peers", []):
        who = peer.get("name") or peer["fingerprint"]
        lines.append(f"  {who}: {_peer_state(peer)}  sent {_size(peer['bytes_sent'])}  "
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
