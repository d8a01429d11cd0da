"""The copy relay (bench/copy_relay.py): ptunnel's shape doing nothing but copy."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bench import copy_relay
from bench.paths.base import Target
from bench.paths.copy_relay import CopyRelay
from lab.demo import echo_server


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = echo_server(0)
    yield server.getsockname()[1]
    server.close()


def echoed(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(message)
    got = b""
    while len(got) < len(message):
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return got


def test_the_relay_carries_each_new_connection_both_ways(echo_port: int) -> None:
    relay = CopyRelay()
    try:
        port = relay.start(Target("127.0.0.1", echo_port))
        assert set(relay.processes()) == {"connect", "expose"}
        for _ in range(2):  # a second connection replaces the first
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for size in (64, 1, copy_relay.CHUNK * 3 + 7):  # several datagrams, in order
                    message = bytes(i % 251 for i in range(size))
                    assert echoed(sock, message) == message
    finally:
        relay.stop()


def test_an_end_without_its_port_is_refused_with_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        copy_relay.main(["connect", "--udp", "40001", "--peer", "40002", "--target", "9"])
    assert exited.value.code == 2
