"""The forwarding wire format: round trips, and garbage never raises anything but our own error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.forward.wire import (
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


def test_golden_bytes() -> None:
    # The layout tables of tunnel.forward.wire, byte for byte: peers on other versions read these.
    assert encode_open("dns") == bytes.fromhex("01 03 646e73")
    assert encode_udp("dns", 7, b"q") == bytes.fromhex("01 03 646e73 00000007 71")


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
