"""`ptunnel netcheck [--json]`: does UDP work here, what is my public endpoint, what NAT is this."""

from __future__ import annotations

import argparse

from tunnel.addresses import format_endpoint
from tunnel.cli.arguments import endpoint_arg, port_number_arg
from tunnel.cli.commands.list import server_address
from tunnel.cli.context import Context
from tunnel.node.netcheck import DEFAULT_TIMEOUT, netcheck

NAME = "netcheck"
ORDER = 31
HELP = "check UDP, my public endpoint and my NAT's type"
DESCRIPTION = """\
Send a probe from one UDP socket to two ports of the rendezvous and compare the source endpoints
they saw. The same endpoint means an endpoint-independent mapping (direct paths will usually
open); different endpoints mean a symmetric NAT (expect the relay unless the peer's NAT is
friendlier). No answer means UDP to the rendezvous is blocked here. Exit status 1 when no answer.

  ptunnel netcheck
  ptunnel netcheck --rendezvous vps.example.org:7000 --json
"""

MAPPING_TEXT = {
    "endpoint-independent": "endpoint-independent (hole punching works)",
    "endpoint-dependent": "endpoint-dependent, i.e. symmetric (direct paths are unlikely)",
    "unknown": "unknown (only one port answered)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rendezvous", type=endpoint_arg, metavar="HOST:PORT",
                        help="rendezvous server (env PTUNNEL_RENDEZVOUS, config `rendezvous`)")
    parser.add_argument("--netcheck-port", type=port_number_arg, metavar="PORT",
                        help="the rendezvous' second port (default: its port + 1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for answers (default {DEFAULT_TIMEOUT:g})")


def run(args: argparse.Namespace, ctx: Context) -> int:
    server = server_address(ctx)
    result = netcheck(server, args.netcheck_port, args.timeout)
    if args.json:
        ctx.out_json(result.as_dict())
    elif not result.udp:
        ctx.out(f"UDP:             no answer from {format_endpoint(server)} (blocked or down)")
    else:
        info = result.as_dict()
        ctx.out("UDP:             works")
        ctx.out(f"public endpoint: {info['public_endpoint']}")
        ctx.out(f"NAT mapping:     {MAPPING_TEXT[result.mapping]}")
        ctx.out(f"port preserved:  {'yes' if info['port_preserved'] else 'no'}")
    return 0 if result.udp else 1
