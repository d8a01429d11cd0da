"""Forwarding headers: round trips, and garbage never raises anything but our own error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.node.payloads import (
    ForwardDecodeError,
    decode_open,
    decode_udp,
    encode_open,
    encode_udp,
    reset_reason,
)


def test_open_header_round_trip_and_partial_arrival() -> None:
    header = encode_open("ssh-home")
    data = header + b"SSH-2.0-OpenSSH"
    assert decode_open(data) == ("ssh-home", len(header))
    for cut in range(len(header)):
        assert decode_open(data[:cut]) is None  # not yet complete: wait for more
    with pytest.raises(ForwardDecodeError):
        decode_open(b"\x09\x03abc")
    with pytest.raises(ValueError):
        encode_open("x" * 64)


def test_udp_round_trip() -> None:
    assert decode_udp(encode_udp("dns", 7, b"query")) == ("dns", 7, b"query")
    assert decode_udp(encode_udp("dns", 7, b"")) == ("dns", 7, b"")
    assert decode_udp(encode_udp("dns", 7, b"")[:-1]) is None


def test_reset_reasons_are_readable() -> None:
    assert "refused" in reset_reason(1)
    assert "code 99" in reset_reason(99)


@settings(max_examples=10_000, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_never_raises_unexpectedly(data: bytes) -> None:
    decode_udp(data)
    try:
        decode_open(data)
    except ForwardDecodeError:
        pass
