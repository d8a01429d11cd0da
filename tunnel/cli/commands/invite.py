"""`ptunnel invite`: print the join code of this node's network (and of its rendezvous)."""

from __future__ import annotations

import argparse
import sys

from tunnel.addresses import format_endpoint
from tunnel.cli.arguments import endpoint_arg
from tunnel.cli.context import Context
from tunnel.errors import UserError
from tunnel.keys.joincode import encode_join_code, encode_join_code_v2

NAME = "invite"
ORDER = 11
HELP = "print a join code that lets another machine join this network"
DESCRIPTION = """\
Print this network's join code on one line of standard output, and nothing else there.

The code (ptn2-...) also names this node's rendezvous and the server key pinned for it (or
configured as `rendezvous_key`), so the other machine needs neither --rendezvous nor trust on
first use. Without a known rendezvous and key it is a ptn1 code, and a note on stderr says so.

Anyone with the code is a member of the network: send it only over a channel you trust
(an ssh session, a password manager). On the other machine run `ptunnel join -` and paste it.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rendezvous", type=endpoint_arg, metavar="HOST:PORT",
                        help="rendezvous to name in the code (env PTUNNEL_RENDEZVOUS, config "
                        "`rendezvous`, else the one this node joined with)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    secret = ctx.network_secret()
    try:
        addr = ctx.rendezvous_addr()
    except UserError:
        addr = None
    key = ctx.rendezvous_key(addr) if addr is not None else None
    if addr is None or key is None:
        why = ("no rendezvous is configured" if addr is None else
               f"no key is known for the rendezvous at {format_endpoint(addr)} (run `ptunnel "
               "list` once to pin it, or set rendezvous_key)")
        sys.stderr.write(f"note: this code does not name the rendezvous: {why}\n")
        ctx.out(encode_join_code(secret))
        return 0
    ctx.out(encode_join_code_v2(secret, key, [format_endpoint(addr)]))
    return 0
