"""`ptunnel expose [HOST:]PORT --as NAME`: make a local service reachable by network members.

When a ptunnel already runs on the state directory, the expose is handed to it over the control
socket (`tunnel.cli.forwards`) and this command returns once the name is registered.
"""

from __future__ import annotations

import argparse

from tunnel.addresses import Addr, format_endpoint
from tunnel.api import Tunnel
from tunnel.cli.arguments import key_arg, name_arg, port_arg
from tunnel.cli.context import Context
from tunnel.cli.handoff import RunningNode, added, ask, ignored_node_options, running_node
from tunnel.cli.runtime import add_node_options, build_tunnel, run_tunnel
from tunnel.keys.netkeys import encode_key

NAME = "expose"
ORDER = 20
HELP = "make a local port reachable under a name"
DESCRIPTION = """\
Register NAME at the rendezvous and forward every authorized peer's connections to HOST:PORT
(default host 127.0.0.1). The service may start later: connections made while nothing listens
are refused back to the connecting side with the reason. Runs until Ctrl-C, SIGTERM or SIGHUP. A
rendezvous that does not answer at all is reported after 5 s. If a ptunnel already runs with
this state directory, the service is added to it instead and the command returns once the name
is registered (`ptunnel stop NAME` removes it).

  ptunnel expose 22 --as ssh-home
  ptunnel expose 192.168.1.20:8080 --as nas-web --allow <laptop's public key>
  ptunnel expose 27015 --as game --udp
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=port_arg, metavar="[HOST:]PORT",
                        help="the local service to expose")
    parser.add_argument("--as", dest="name", type=name_arg, required=True, metavar="NAME",
                        help="name to register: 1-63 of a-z, 0-9, '.', '_', '-' (capitals are "
                             "read as lower case)")
    parser.add_argument("--udp", action="store_true", help="forward UDP datagrams, not TCP")
    parser.add_argument("--allow", action="append", type=key_arg, metavar="KEY",
                        help="only this public key may connect (repeatable; default: every "
                             "member of the network)")
    add_node_options(parser)


def exposing_line(target: Addr, udp: bool, name: str, public: str | None) -> str:
    return (f"exposing {format_endpoint(target)}{'/udp' if udp else ''} as '{name}' "
            f"(public endpoint {public or '?'})")


def run(args: argparse.Namespace, ctx: Context) -> int:
    node = running_node(ctx.home)
    if node is not None:
        return _hand_over(args, ctx, node)
    tunnel = build_tunnel(ctx)
    host, port = args.target

    async def body(tunnel: Tunnel) -> None:
        await tunnel.expose(port, args.name, host=host, udp=args.udp, allow=args.allow,
                            origin="command")
        public = tunnel.node.public_endpoint
        line = exposing_line(args.target, args.udp, args.name,
                             format_endpoint(public) if public else None)
        ctx.out(f"{line}; Ctrl-C to stop")

    return run_tunnel(ctx, tunnel, body)


def _hand_over(args: argparse.Namespace, ctx: Context, node: RunningNode) -> int:
    ignored_node_options(args, node)
    host, port = args.target
    allow = None if args.allow is None else [encode_key(key) for key in args.allow]
    reply = ask(node, {"cmd": "expose", "name": args.name, "host": host, "port": port,
                       "udp": args.udp, "allow": allow}, timeout=20)
    ctx.out(exposing_line(args.target, args.udp, args.name, reply.get("public_endpoint")))
    added(node, args.name)
    return 0
