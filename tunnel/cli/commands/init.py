"""`ptunnel init [--rendezvous HOST:PORT]`: create this node's key and a new network, and save
the rendezvous server in node.yaml."""

from __future__ import annotations

import argparse
import os

from tunnel.addresses import format_endpoint
from tunnel.cli.arguments import endpoint_arg
from tunnel.cli.config import NODE_KEYS
from tunnel.cli.config_write import set_key
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

--rendezvous HOST:PORT saves the server in node.yaml of the state directory (or the -c FILE), so
that no command needs PTUNNEL_RENDEZVOUS. On a node that is already in a network,
`ptunnel init --rendezvous HOST:PORT` only saves the server and keeps the network.

  ptunnel init --rendezvous vps.example.org:7000
  ptunnel invite                   then on the other machine: ptunnel join -
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace an existing network (its members lose access to this node)")
    parser.add_argument("--rendezvous", type=endpoint_arg, metavar="HOST:PORT",
                        help="the rendezvous server, saved as `rendezvous:` in node.yaml")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, ctx: Context) -> int:
    existing = load_network_secret(ctx.home)
    if existing is not None and args.rendezvous is not None and not args.force:
        return keep_network(args, ctx, existing)
    if existing is not None and not args.force:
        raise UserError(
            f"{ctx.home} already belongs to network {short_network_id(network_id(existing))}; "
            "pass --force to replace it, or use `ptunnel invite` to add machines to it"
        )
    identity, _ = load_or_create_identity(ctx.home)
    # The server first: if it cannot be saved, no new network replaced anything.
    saved = save_rendezvous(args, ctx) if args.rendezvous is not None else ""
    secret = os.urandom(NETWORK_SECRET_SIZE)
    store_network_secret(ctx.home, secret)
    nid = short_network_id(network_id(secret))
    if args.json:
        ctx.out_json({"network_id": nid, "fingerprint": fingerprint(identity.public),
                      "rendezvous": format_endpoint(args.rendezvous) if saved else None})
    else:
        ctx.out(f"created network {nid}; this node is {fingerprint(identity.public)}")
        if saved:
            ctx.out(saved)
        ctx.out("add another machine: run `ptunnel invite` here, then `ptunnel join CODE` there")
    return 0


def keep_network(args: argparse.Namespace, ctx: Context, secret: bytes) -> int:
    """`init --rendezvous` on a member: only the server to save, since a new network would cut
    this node off from the others."""
    saved = save_rendezvous(args, ctx)
    nid = short_network_id(network_id(secret))
    if args.json:
        ctx.out_json({"network_id": nid, "rendezvous": format_endpoint(args.rendezvous)})
    else:
        ctx.out(f"kept network {nid}; {saved}")
    return 0


def save_rendezvous(args: argparse.Namespace, ctx: Context) -> str:
    """Write `rendezvous: HOST:PORT` into the node's config file; what was done, in words."""
    path = ctx.config_path or ctx.home / "node.yaml"
    address = format_endpoint(args.rendezvous)
    set_key(path, "rendezvous", address, NODE_KEYS)
    return f"rendezvous {address} saved in {path}"
