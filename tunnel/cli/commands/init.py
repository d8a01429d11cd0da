"""`ptunnel init`: create this node's key and a new network."""

from __future__ import annotations

import argparse
import os

from tunnel.cli.context import Context
from tunnel.errors import UserError
from tunnel.keys.identity import load_network_secret, load_or_create_identity, store_network_secret
from tunnel.keys.netkeys import NETWORK_SECRET_SIZE, fingerprint, network_id, short_network_id

NAME = "init"
ORDER = 10
HELP = "create this node's key and a new network"
DESCRIPTION = """\
Create this node's static key (if missing) and a new network secret.

A network is the set of machines that share one secret: only they can register names, list each
other or connect. Bring other machines in with `ptunnel invite` here and `ptunnel join CODE` there.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace an existing network (its members lose access to this node)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, ctx: Context) -> int:
    existing = load_network_secret(ctx.home)
    if existing is not None and not args.force:
        raise UserError(
            f"{ctx.home} already belongs to network {short_network_id(network_id(existing))}; "
            "pass --force to replace it, or use `ptunnel invite` to add machines to it"
        )
    identity, _ = load_or_create_identity(ctx.home)
    secret = os.urandom(NETWORK_SECRET_SIZE)
    store_network_secret(ctx.home, secret)
    nid = short_network_id(network_id(secret))
    if args.json:
        ctx.out_json({"network_id": nid, "fingerprint": fingerprint(identity.public)})
    else:
        ctx.out(f"created network {nid}; this node is {fingerprint(identity.public)}")
        ctx.out("add another machine: run `ptunnel invite` here, then `ptunnel join CODE` there")
    return 0
