"""What `-v` shows while a tunnel comes up, checked on the log records (caplog): the rendezvous
registration, the introduction, the handshake, the path change with its reason and the PMTU
result, each one line, addresses as `127.0.0.1:43540` and never a Python repr (`(('127.0.0.1',
47810),)`, `joined ()`); per-datagram lines only from `ptunnel.packets`, when it is enabled (-vv).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
import uvloop

from tests.support.loopback import free_port, start_tcp_echo, world
from tunnel.cli.logs import PACKETS_LOGGER
from tunnel.keys.netkeys import fingerprint

# A tuple or list where an address or names should be: "('127.0.0.1', 47810)", "()", "[...]".
REPR = re.compile(r"\('|\(\)|\['|\{'|b'")


def bring_up(tmp_path: Path) -> tuple[bytes, bytes]:
    """Expose and connect on loopback, ping once; the nodes' public keys."""
    keys: list[bytes] = []

    async def main() -> None:
        async with world(tmp_path) as w:
            _server, service = await start_tcp_echo()
            exposer, connector = w.tunnel(), w.tunnel()
            keys.extend([exposer.options.identity.public, connector.options.identity.public])
            await exposer.expose(service, "echo")
            await connector.connect("echo", free_port())
            await connector.ping("echo", count=1, interval=0.05)
            await asyncio.sleep(0.5)  # the PMTU probes: answered within a round trip

    uvloop.run(main())
    return keys[0], keys[1]


def test_v_shows_the_events_of_a_tunnel_coming_up(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger(PACKETS_LOGGER).setLevel(logging.INFO)  # as the CLI sets it for -v
    exposer, _connector = bring_up(tmp_path)
    echo = f"echo ({fingerprint(exposer)})"
    messages = [record.getMessage() for record in caplog.records]
    text = "\n".join(messages)

    assert re.search(r"registered at the rendezvous 127\.0\.0\.1:\d+ as echo; public endpoint "
                     r"127\.0\.0\.1:\d+", text), text
    assert re.search(r"registered at the rendezvous 127\.0\.0\.1:\d+ as \(no names\)", text)
    assert re.search(rf"introduced to {re.escape(echo)}: public 127\.0\.0\.1:\d+, lan "
                     r"127\.0\.0\.1:\d+", text), text
    assert re.search(rf"handshake with {re.escape(echo)} completed at 127\.0\.0\.1:\d+", text)
    assert re.search(rf"path to {re.escape(echo)}: no path -> direct lan 127\.0\.0\.1:\d+: the "
                     "first candidate to answer", text), text
    assert f"path to {echo} carries 65000-byte datagrams (PMTU probe answered)" in text
    assert re.search(r"joined: echo from 127\.0\.0\.1:\d+", text), text
    assert re.search(r"joined: a node without names from 127\.0\.0\.1:\d+", text), text

    for message in messages:
        assert "\n" not in message, message  # one event, one line
        assert not REPR.search(message), message
    assert not [r for r in caplog.records if r.name == PACKETS_LOGGER]  # -v: no packets


def test_vv_adds_a_line_per_datagram(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger(PACKETS_LOGGER).setLevel(logging.DEBUG)  # as the CLI sets it for -vv
    try:
        bring_up(tmp_path)
    finally:
        logging.getLogger(PACKETS_LOGGER).setLevel(logging.NOTSET)
    packets = [r.getMessage() for r in caplog.records if r.name == PACKETS_LOGGER]
    received = r"received \d+ bytes \(type \d+(, segments of \d+)?\) from 127\.0\.0\.1:\d+"
    sending = r"sending \d+ datagrams? \(\d+ bytes\) to 127\.0\.0\.1:\d+( as one GSO run)?"
    assert any(re.fullmatch(received, m)
               for m in packets), packets[:5]
    assert any(re.fullmatch(sending, m)
               for m in packets), packets[:5]
    assert all(not REPR.search(m) for m in packets)
