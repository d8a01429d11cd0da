"""`ptunnel join CODE`: become a member of the network a join code names."""

from __future__ import annotations

import argparse

from tunnel.cli.context import Context
from tunnel.errors import UserError
from tunnel.keys.identity import load_network_secret, load_or_create_identity, store_network_secret
from tunnel.keys.joincode import JoinCodeError, decode_join_code
from tunnel.keys.netkeys import fingerprint, network_id, short_network_id

NAME = "join"
ORDER = 12
HELP = "join the network of a code printed by `ptunnel invite`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", help="the join code (ptn1-...), as `ptunnel invite` printed it")
    parser.add_argument("--force", action="store_true",
                        help="leave the network this node is in now and join this one")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, ctx: Context) -> int:
    try:
        secret = decode_join_code(args.code)
    except JoinCodeError as exc:
        raise UserError(str(exc)) from None
    nid = short_network_id(network_id(secret))
    existing = load_network_secret(ctx.home)
    if existing is not None and existing != secret and not args.force:
        raise UserError(
            f"this node already belongs to network {short_network_id(network_id(existing))}; "
            f"pass --force to leave it and join {nid}"
        )
    identity, _ = load_or_create_identity(ctx.home)
    store_network_secret(ctx.home, secret)
    if args.json:
        ctx.out_json({"network_id": nid, "fingerprint": fingerprint(identity.public)})
    else:
        ctx.out(f"joined network {nid}; this node is {fingerprint(identity.public)}")
    return 0
