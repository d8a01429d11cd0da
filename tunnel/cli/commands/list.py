"""`ptunnel list [--json]`: the active nodes of my network, as the rendezvous sees them."""

from __future__ import annotations

import argparse
import threading
import time

from tunnel.addresses import format_endpoint
from tunnel.cli.arguments import endpoint_arg
from tunnel.cli.context import Context
from tunnel.errors import RuntimeFailure
from tunnel.keys.netkeys import encode_key, fingerprint
from tunnel.keys.pins import ServerKeyMismatch, ServerPins
from tunnel.node.netcheck import query, resolve
from tunnel.path.rendezvous import (
    ListReceived,
    ListRefused,
    RendezvousClient,
    ServerKeyChanged,
    ServerKeyLearned,
)

NAME = "list"
ORDER = 30
HELP = "list the active nodes of my network"
DESCRIPTION = """\
Ask the rendezvous for the nodes of your network that are registered now: their names, key
fingerprints, public endpoints (as the rendezvous sees them) and when it last heard from them.
Only members of your network can ask, and only your network's nodes are shown. Exits 1 when
the rendezvous does not answer or refuses this network.

  ptunnel list
  ptunnel list --json --rendezvous vps.example.org:7000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rendezvous", type=endpoint_arg, metavar="HOST:PORT",
                        help="rendezvous server (env PTUNNEL_RENDEZVOUS, config `rendezvous`)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the rendezvous (default 5)")


def server_address(ctx: Context, addr: tuple[str, int] | None = None) -> tuple[str, int]:
    """The rendezvous (`addr`, else the configured one) resolved to an IP address."""
    addr = addr or ctx.rendezvous_addr()
    # getaddrinfo() cannot be interrupted, and a resolver that does not answer holds it for
    # seconds: it runs in a daemon thread, and waiting for that thread ends at Ctrl-C.
    outcome: list[tuple[str, int] | OSError] = []

    def lookup() -> None:
        try:
            outcome.append(resolve(addr))
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=lookup, name="resolve", daemon=True)
    worker.start()
    worker.join()
    if isinstance(outcome[0], OSError):
        exc = outcome[0]
        raise RuntimeFailure(f"cannot resolve rendezvous host {addr[0]!r}: {exc.strerror or exc}; "
                        "check --rendezvous / PTUNNEL_RENDEZVOUS")
    return outcome[0]


def run(args: argparse.Namespace, ctx: Context) -> int:
    secret = ctx.network_secret()
    identity = ctx.identity()
    me = identity.public
    configured = ctx.rendezvous_addr()
    server = server_address(ctx, configured)
    # Counters are per key and this key is also the running node's: start from the clock, as
    # the node does, so the request is not refused as stale (the server would resync us anyway).
    client = RendezvousClient(secret, identity.private, (), (), server,
                              server_key=ctx.rendezvous_key(configured),
                              counter_start=time.time_ns() // 1000)
    client.request_list(time.monotonic())
    events = query(client,
                   lambda e: isinstance(e, ListReceived | ListRefused | ServerKeyChanged),
                   args.timeout)
    pins = ServerPins(ctx.home)
    for event in events:
        if isinstance(event, ServerKeyLearned):
            pins.check(format_endpoint(configured), event.key)
        elif isinstance(event, ServerKeyChanged):
            raise ServerKeyMismatch(format_endpoint(configured), event.pinned, event.offered,
                                    pins.path)
        elif isinstance(event, ListRefused):
            # Exit 1: the operator can admit the network, and the same command then works.
            raise RuntimeFailure(f"the rendezvous at {format_endpoint(configured)} refused the "
                                 f"list: {event.reason}")
    listed = [e for e in events if isinstance(e, ListReceived)]
    if not listed:
        raise RuntimeFailure(
            f"no answer from the rendezvous at {format_endpoint(server)} within "
            f"{args.timeout:g} s; check the address, and try `ptunnel netcheck`"
        )
    rows = [
        {
            "names": list(peer.names),
            "fingerprint": fingerprint(peer.static),
            "public_key": encode_key(peer.static),
            "endpoint": format_endpoint(peer.endpoint),
            "last_seen_seconds": peer.seen_ago,
            "self": peer.static == me,
        }
        for peer in listed[-1].peers
    ]
    if args.json:
        ctx.out_json(rows)
        return 0
    if not rows:
        ctx.out("no active nodes in this network")
        return 0
    header = ("NAMES", "FINGERPRINT", "ENDPOINT", "LAST SEEN")
    table = [header] + [
        (", ".join(r["names"]) or "-",  # type: ignore[arg-type]
         str(r["fingerprint"]) + (" (this node)" if r["self"] else ""),
         str(r["endpoint"]), f"{r['last_seen_seconds']} s ago")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        ctx.out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
