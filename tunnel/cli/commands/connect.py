"""`ptunnel connect NAME -L [BIND:]PORT`: reach a peer's service through a local port.

When a ptunnel already runs on the state directory, the connect is handed to it over the
control socket (`tunnel.cli.forwards`) and this command returns once the tunnel is ready.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from tunnel.addresses import parse_endpoint
from tunnel.api import Tunnel
from tunnel.cli.arguments import name_arg
from tunnel.cli.context import Context
from tunnel.cli.handoff import (
    RunningNode,
    added,
    ask,
    ignored_node_options,
    note,
    running_node,
)
from tunnel.cli.runtime import add_node_options, build_tunnel, run_tunnel

NAME = "connect"
ORDER = 21
HELP = "reach a service a peer exposes through a local port"
DESCRIPTION = """\
Find NAME in your network, open a direct path to it (or a relayed one when the NATs on both sides
refuse every direct path), and carry every connection to BIND:PORT (default 127.0.0.1) to it.
Prints one line when the tunnel is ready, then runs until Ctrl-C, SIGTERM or SIGHUP (the
terminal closed; `nohup` keeps it running), reconnecting when the peer or the rendezvous goes
away. A rendezvous that does not answer at all is reported after 5 s. If a ptunnel already runs
with this state directory, the tunnel is added to it instead and the command returns once it is
ready (`ptunnel stop PORT` removes it).

  ptunnel connect ssh-home -L 2222        then: ssh -p 2222 localhost
  ptunnel connect ssh-home -L [::1]:2222
  ptunnel connect game -L 27015 --udp

ssh's -L LPORT:HOST:RPORT is read as -L LPORT: the exposing side chooses the target.
"""

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Listen:
    """Where `-L` listens, and the ssh-style target it named (which the exposing side owns)."""

    bind: str
    port: int
    ignored_target: str | None = None


def _split(text: str) -> list[str]:
    """`-L`'s colon-separated fields; an IPv6 address stays whole inside its brackets."""
    fields, current, depth = [], "", 0
    for char in text:
        if char == ":" and depth == 0:
            fields.append(current)
            current = ""
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        current += char
    return [*fields, current]


def listen_arg(text: str) -> Listen:
    """`PORT`, `BIND:PORT` (`[::1]:2222`, `localhost:2222`), or ssh's `[BIND:]LPORT:HOST:RPORT`,
    whose HOST:RPORT the exposing side decides (so it is set aside, and the user told)."""
    fields = _split(text.strip())
    try:
        if len(fields) == 1:
            bind, port = parse_endpoint(fields[0], default_host=LOCALHOST)
            return Listen(bind, port)
        if len(fields) == 2:
            bind, port = parse_endpoint(text)
            return Listen(bind, port)
        # ssh's [BIND:]LPORT:HOST:RPORT; an IPv6 address without brackets only looks like it.
        if len(fields) in (3, 4) and fields[-3].isdigit() and all(fields):
            local = ":".join(fields[:-2])
            bind, port = parse_endpoint(local, default_host=LOCALHOST)
            return Listen(bind, port, ":".join(fields[-2:]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(
        f"{text!r} is not [BIND:]PORT; an IPv6 address goes in brackets: [::1]:2222")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", type=name_arg,
                        help="the name the peer exposes (case-insensitive)")
    parser.add_argument("-L", "--listen", dest="listen", type=listen_arg, required=True,
                        metavar="[BIND:]PORT", help="local address to listen on (ssh's "
                        "LPORT:HOST:RPORT is read as LPORT)")
    parser.add_argument("--udp", action="store_true", help="forward UDP datagrams, not TCP")
    parser.add_argument("--accept-new-key", action="store_true",
                        help="accept a changed key for NAME (only after checking it with the "
                             "peer's owner: `ptunnel id` there)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up if no tunnel is up within this time (default 30; a "
                             "rendezvous that does not answer at all: after 5 s)")
    add_node_options(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    listen: Listen = args.listen
    if listen.ignored_target is not None:
        note(f"the exposing node chooses the target ({listen.ignored_target} is not used); "
             f"forwarding local port {listen.port} to '{args.name}'")
    node = running_node(ctx.home)
    if node is not None:
        return _hand_over(args, ctx, node, listen)
    tunnel = build_tunnel(ctx)

    async def body(tunnel: Tunnel) -> None:
        connection = await tunnel.connect(args.name, listen.port, bind=listen.bind, udp=args.udp,
                                          accept_new_key=args.accept_new_key,
                                          timeout=args.timeout, origin="command")
        if connection.pin_news is not None:
            note(connection.pin_news)
        ctx.out(f"ready: {connection.describe()}")

    return run_tunnel(ctx, tunnel, body)


def _hand_over(args: argparse.Namespace, ctx: Context, node: RunningNode,
               listen: Listen) -> int:
    ignored_node_options(args, node)
    reply = ask(node, {"cmd": "connect", "name": args.name, "bind": listen.bind,
                       "port": listen.port, "udp": args.udp,
                       "accept_new_key": args.accept_new_key, "timeout": args.timeout},
                timeout=args.timeout + 10)
    if reply.get("pin"):
        note(str(reply["pin"]))
    ctx.out(f"ready: {reply.get('ready')}")
    added(node, str(listen.port))
    return 0
