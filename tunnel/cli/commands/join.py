"""`ptunnel join CODE|-`: become a member of the network a join code names, and trust its
rendezvous (a ptn2 code names the server's address and key)."""

from __future__ import annotations

import argparse
import sys

from tunnel.addresses import parse_endpoint
from tunnel.cli.context import Context
from tunnel.errors import UserError
from tunnel.keys.identity import load_network_secret, load_or_create_identity, store_network_secret
from tunnel.keys.joincode import JoinCodeError, decode_join_code
from tunnel.keys.netkeys import fingerprint, network_id, short_network_id
from tunnel.keys.pins import ServerPins, store_joined_rendezvous

NAME = "join"
ORDER = 12
HELP = "join the network of a code from `ptunnel invite`"
DESCRIPTION = """\
Join the network of a code printed by `ptunnel invite`. Pass `-` to read the code from
standard input (`ptunnel join - < code.txt`), which keeps it out of the shell history and the
process list: the code is the network secret.

A ptn2 code also names the rendezvous and its key: the address is remembered (no --rendezvous
needed afterwards) and the key pinned in $PTUNNEL_HOME/known_rendezvous.

  ptunnel join -                   paste the code, then Ctrl-D
  ptunnel join - < code.txt
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", help="the join code (ptn2-... or ptn1-...) as `ptunnel invite` "
                        "printed it, or - to read it from standard input")
    parser.add_argument("--force", action="store_true",
                        help="leave the network this node is in now and join this one")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _code_text(arg: str) -> str:
    if arg != "-":
        return arg
    text = sys.stdin.read(4096)
    if not text.strip():
        raise UserError("no join code on standard input; pipe in the line `ptunnel invite` "
                        "printed (ptunnel join - < code.txt)")
    return text


def run(args: argparse.Namespace, ctx: Context) -> int:
    try:
        code = decode_join_code(_code_text(args.code))
    except JoinCodeError as exc:
        raise UserError(str(exc)) from None
    for server in code.servers:
        try:
            parse_endpoint(server)
        except ValueError as exc:
            raise UserError(f"the join code's rendezvous {server!r} is not HOST:PORT ({exc}); "
                            "ask for a new code") from None
    secret = code.secret
    nid = short_network_id(network_id(secret))
    existing = load_network_secret(ctx.home)
    if existing is not None and existing != secret and not args.force:
        raise UserError(
            f"this node already belongs to network {short_network_id(network_id(existing))}; "
            f"pass --force to leave it and join {nid}"
        )
    identity, _ = load_or_create_identity(ctx.home)
    store_network_secret(ctx.home, secret)
    if code.server_key is not None:
        pins = ServerPins(ctx.home)
        for server in code.servers:
            pins.pin(server, code.server_key)
        store_joined_rendezvous(ctx.home, list(code.servers))
    server_fp = fingerprint(code.server_key) if code.server_key is not None else None
    if args.json:
        ctx.out_json({"network_id": nid, "fingerprint": fingerprint(identity.public),
                      "rendezvous": list(code.servers), "rendezvous_fingerprint": server_fp})
    else:
        ctx.out(f"joined network {nid}; this node is {fingerprint(identity.public)}")
        if code.servers:
            ctx.out(f"rendezvous {', '.join(code.servers)} (key {server_fp}) remembered")
    return 0
