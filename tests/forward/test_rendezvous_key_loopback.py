"""The rendezvous' key through the public API on loopback: pinned on first use under the address
as configured, and a node that holds another key for the server refuses it in one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.forward.test_forward_loopback import run
from tests.support.loopback import World, start_tcp_echo
from tunnel.addresses import format_endpoint
from tunnel.api import TunnelError
from tunnel.keys.netkeys import fingerprint
from tunnel.keys.pins import ServerPins
from tunnel.session.crypto import public_key

WRONG_KEY = public_key(b"\x44" * 32)


def test_first_use_pins_the_server_key_and_a_wrong_key_is_refused(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        server, port = await start_tcp_echo()
        first = w.tunnel()
        await first.expose(port, "echo")
        real = ServerPins(first.home).get(format_endpoint(w.rendezvous))
        assert real is not None and first.server_key_error is None
        # A node told another key for this server (a stale pin, a wrong config, an impostor).
        other = w.tunnel(rendezvous_key=WRONG_KEY)
        started = time.monotonic()
        with pytest.raises(TunnelError) as info:
            await other.expose(port, "other")
        assert time.monotonic() - started < 3  # the COOKIE shows the key: no 5 s timeout
        message = info.value.message
        assert fingerprint(real) in message and fingerprint(WRONG_KEY) in message
        server.close()

    run(tmp_path, body)
