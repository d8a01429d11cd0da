"""`ptunnel pins list|forget NAME`: the peer keys pinned in `$PTUNNEL_HOME/known_nodes`.

The first `connect` to a name pins the key the rendezvous introduced for it (and says so on
the terminal); `pins list` shows every pin, `pins forget NAME` removes one, as
`ssh-keygen -R HOST` does for known_hosts, so that the next connect pins afresh.
"""

from __future__ import annotations

import argparse

from tunnel.cli.arguments import name_arg
from tunnel.cli.context import Context
from tunnel.errors import UserError
from tunnel.keys.netkeys import encode_key, fingerprint
from tunnel.keys.pins import PinStore

NAME = "pins"
ORDER = 14
HELP = "list or forget pinned peer keys (as known_hosts)"
DESCRIPTION = """\
The first `ptunnel connect NAME` pins the key behind NAME in $PTUNNEL_HOME/known_nodes; later
connects refuse another key. `pins list` shows each pinned name, its key's fingerprint and when
it was first seen; `pins forget NAME` removes a pin (after checking with the peer's owner that
its key really changed), so that the next connect pins the key it finds.

  ptunnel pins list
  ptunnel pins forget ssh-home
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Positionals, not nested subcommands: the common options (--home, -v) work after them.
    parser.add_argument("action", choices=("list", "forget"),
                        help="list: every pin (name, fingerprint, first seen); forget: remove "
                             "the pin of NAME")
    parser.add_argument("name", nargs="?", type=name_arg,
                        help="the pinned name to forget (case-insensitive)")
    parser.add_argument("--json", action="store_true", help="machine-readable list")


def run(args: argparse.Namespace, ctx: Context) -> int:
    store = PinStore(ctx.home)
    if args.action == "forget":
        if args.name is None:
            raise UserError("which pin? `ptunnel pins forget NAME`; `ptunnel pins list` shows "
                            "the pinned names")
        pinned = store.get(args.name)
        if pinned is None or not store.remove(args.name):
            raise UserError(f"no pin for '{args.name}' in {store.path}; `ptunnel pins list` "
                            "shows the pinned names")
        ctx.out(f"forgot the key of '{args.name}' ({fingerprint(pinned)}); the next "
                "`ptunnel connect` to it pins the key it finds")
        return 0
    pins = [{"name": name, "fingerprint": fingerprint(key), "key": encode_key(key),
             "first_seen": seen or None} for name, key, seen in store.pins()]
    if args.json:
        ctx.out_json(pins)
        return 0
    if not pins:
        ctx.out(f"no pins yet in {store.path}: the first `ptunnel connect NAME` pins one")
        return 0
    width = max(len(pin["name"] or "") for pin in pins)
    for pin in pins:
        seen = f"first seen {pin['first_seen']}" if pin["first_seen"] else "first seen unknown"
        ctx.out(f"{pin['name']:<{width}}  {pin['fingerprint']}  {seen}")
    return 0
