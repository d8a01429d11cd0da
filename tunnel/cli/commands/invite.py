"""`ptunnel invite`: print the join code of this node's network (and of its rendezvous)."""

from __future__ import annotations

import argparse
import sys

from tunnel.addresses import format_endpoint
from tunnel.cli.arguments import endpoint_arg
from tunnel.cli.context import Context
from tunnel.cli.serverkey import learn_server_key
from tunnel.errors import UserError
from tunnel.keys.joincode import encode_join_code, encode_join_code_v2

NAME = "invite"
ORDER = 11
HELP = "print a join code for another machine"
DESCRIPTION = """\
Print this network's join code on one line of standard output, and nothing else there.

The code (ptn2-...) also names this node's rendezvous and the server's key, so the other machine
needs neither --rendezvous nor trust on first use. The key is the one configured as
`rendezvous_key` or pinned for that server; if there is neither, invite asks the server for it,
pins it and shows its fingerprint on stderr (compare it with the one `ptunnel rendezvous`
printed). Exits 1 if the server does not answer. With no rendezvous configured at all it prints
a ptn1 code (the network only), and a note on stderr says so.

  ptunnel init --rendezvous vps.example.org:7000 && ptunnel invite
  ptunnel invite --rendezvous 203.0.113.5:7000     name another server in the code

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
    if addr is None:
        sys.stderr.write("note: this code does not name the rendezvous: no rendezvous is "
                         "configured (`ptunnel init --rendezvous HOST:PORT` saves one)\n")
        ctx.out(encode_join_code(secret))
        return 0
    # A node that never talked to its server yet asks it for its key now: a code without the
    # key would leave the other machine to trust whatever key answers it first.
    key = ctx.rendezvous_key(addr) or learn_server_key(ctx, addr)
    ctx.out(encode_join_code_v2(secret, key, [format_endpoint(addr)]))
    return 0
