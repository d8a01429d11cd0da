"""`ptunnel id`: show this node's public key, fingerprint and network id."""

from __future__ import annotations

import argparse

from tunnel.cli.context import Context
from tunnel.keys.identity import load_network_secret
from tunnel.keys.netkeys import encode_key, fingerprint, network_id, short_network_id

NAME = "id"
ORDER = 13
HELP = "show this node's key, fingerprint and network id"
DESCRIPTION = """\
Show this node's public key (give it to peers for their allow lists), its short fingerprint (what
pins and error messages show) and the id of its network (a one-way derivation: the network secret
never leaves this machine).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, ctx: Context) -> int:
    identity = ctx.identity()
    secret = load_network_secret(ctx.home)
    nid = short_network_id(network_id(secret)) if secret is not None else None
    info = {
        "public_key": encode_key(identity.public),
        "fingerprint": fingerprint(identity.public),
        "network_id": nid,
    }
    if args.json:
        ctx.out_json(info)
    else:
        ctx.out(f"public key:  {info['public_key']}")
        ctx.out(f"fingerprint: {info['fingerprint']}")
        ctx.out(f"network:     {nid or '(none: run `ptunnel init` or `ptunnel join CODE`)'}")
    return 0
