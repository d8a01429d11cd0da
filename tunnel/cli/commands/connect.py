"""`ptunnel connect NAME -L [BIND:]PORT`: reach a peer's service through a local port."""

from __future__ import annotations

import argparse

from tunnel.api import Tunnel
from tunnel.cli.arguments import name_arg, port_arg
from tunnel.cli.context import Context
from tunnel.cli.runtime import add_node_options, build_tunnel, run_tunnel

NAME = "connect"
ORDER = 21
HELP = "reach a service a peer exposes through a local port"
DESCRIPTION = """\
Find NAME in your network, open a direct path to it (or a relayed one when the NATs on both sides
refuse every direct path), and carry every connection to BIND:PORT (default 127.0.0.1) to it.
Prints one line when the tunnel is ready, then runs until Ctrl-C or SIGTERM, reconnecting when
the peer or the rendezvous goes away. A rendezvous that does not answer at all is reported after
5 s.

  ptunnel connect ssh-home -L 2222        then: ssh -p 2222 localhost
  ptunnel connect game -L 27015 --udp
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", type=name_arg,
                        help="the name the peer exposes (case-insensitive)")
    parser.add_argument("-L", "--listen", dest="listen", type=port_arg, required=True,
                        metavar="[BIND:]PORT", help="local address to listen on")
    parser.add_argument("--udp", action="store_true", help="forward UDP datagrams, not TCP")
    parser.add_argument("--accept-new-key", action="store_true",
                        help="accept a changed key for NAME (only after checking it with the "
                             "peer's owner: `ptunnel id` there)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up if no tunnel is up within this time (default 30; a "
                             "rendezvous that does not answer at all: after 5 s)")
    add_node_options(parser)


def run(args: argparse.Namespace, ctx: Context) -> int:
    tunnel = build_tunnel(ctx)
    bind, port = args.listen

    async def body(tunnel: Tunnel) -> None:
        connection = await tunnel.connect(args.name, port, bind=bind, udp=args.udp,
                                          accept_new_key=args.accept_new_key,
                                          timeout=args.timeout)
        ctx.out(f"ready: {connection.describe()}")

    return run_tunnel(ctx, tunnel, body)
