"""The rendezvous' key for a command that needs it before this node ever talked to the server
(`ptunnel invite` right after `init --rendezvous`): asked of the server and pinned on first use,
as a running node would pin it.

The server's COOKIE reply carries its static key in clear (`tunnel/path/rendezvous.py`), and
asking for a cookie costs the server no state and no Diffie-Hellman, so this is one small
datagram each way. Trust is the same as at a node's first contact: whoever answers on the path
could substitute a key, which is why the fingerprint is shown for the user to compare with the
one `ptunnel rendezvous` printed on the server.
"""

from __future__ import annotations

import time

from tunnel.addresses import format_endpoint
from tunnel.cli.commands.list import server_address
from tunnel.cli.context import Context
from tunnel.cli.handoff import note
from tunnel.errors import RuntimeFailure
from tunnel.keys.netkeys import fingerprint
from tunnel.keys.pins import ServerPins
from tunnel.node.netcheck import query
from tunnel.path.rendezvous import RendezvousClient, ServerKeyLearned

# The client sends one cookie request and waits for its answer: asking again every second
# rides out a lost datagram, and 5 s of silence is what every other command calls "no answer".
ATTEMPTS = 5
ATTEMPT_WAIT = 1.0  # s


def learn_server_key(ctx: Context, configured: tuple[str, int]) -> bytes:
    """The key of the rendezvous at `configured` (as configured, before resolving), asked of
    the server and pinned in `known_rendezvous`; RuntimeFailure if it does not answer."""
    server = server_address(ctx, configured)
    identity = ctx.identity()
    client = RendezvousClient(ctx.network_secret(), identity.private, (), (), server)
    for _attempt in range(ATTEMPTS):
        client.request_cookie(time.monotonic())
        events = query(client, lambda e: isinstance(e, ServerKeyLearned), ATTEMPT_WAIT)
        learned = [e.key for e in events if isinstance(e, ServerKeyLearned)]
        if learned:
            break
    else:
        shown = format_endpoint(configured)
        raise RuntimeFailure(
            f"no answer from the rendezvous at {shown} within {ATTEMPTS * ATTEMPT_WAIT:g} s, so "
            "its key cannot go into the code; start `ptunnel rendezvous` there, or put the key "
            "it prints in node.yaml as `rendezvous_key: KEY` (`ptunnel rendezvous --show-key` "
            "on the server)")
    key = learned[0]
    ServerPins(ctx.home).check(format_endpoint(configured), key)
    note(f"pinned the key of the rendezvous at {format_endpoint(configured)}: "
         f"{fingerprint(key)} (first contact); compare it with the one `ptunnel rendezvous` "
         "printed on the server")
    return key
