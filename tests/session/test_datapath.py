"""The C data plane and its Python twin: byte-identical datagrams, the same verdicts, the same
window state, for valid, forged, truncated, replayed, stale and misaddressed segments, under each
transport cipher a handshake may negotiate (ChaCha20-Poly1305 and AES-256-GCM).

Each datagram is built by hand from the wire layout (wire.py) with `cryptography`'s AEAD, as the
session layer sealed it before the C data plane existed, so both implementations are also
checked against the specification, not only against each other.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.datapaths import IMPLEMENTATIONS, datapath, datapath_module
from tunnel.session import datapath_pure as verdicts
from tunnel.session.constants import AES_GCM_REJECT_AFTER_MESSAGES, REJECT_AFTER_MESSAGES
from tunnel.session.params import AES_256_GCM, CHACHA20_POLY1305
from tunnel.session.wire import HEADER_TRANSPORT, MAX_PAYLOAD_SIZE

__all__ = ["datapath"]

KEY = bytes(range(32))
INDEX = b"\x11\x22\x33\x44"
OTHER_INDEX = b"\x55\x66\x77\x88"
HEADER = HEADER_TRANSPORT + INDEX
EXPIRES = 100.0
MANY = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
CIPHERS = (CHACHA20_POLY1305, AES_256_GCM)
# Every test below runs under each transport cipher.
pytestmark = pytest.mark.parametrize("cipher", CIPHERS, ids=("chacha20-poly1305", "aes-256-gcm"))


def by_hand(payload: bytes, counter: int, cipher: int = CHACHA20_POLY1305, key: bytes = KEY,
            header: bytes = HEADER) -> bytes:
    """The transport datagram of `payload`, straight from the layout in wire.py: 4 zero bytes
    and the counter as the nonce, the 16-byte tag after the ciphertext, either cipher."""
    counter_bytes = counter.to_bytes(8, "little")
    nonce = b"\x00" * 4 + counter_bytes
    aead = AESGCM(key) if cipher == AES_256_GCM else ChaCha20Poly1305(key)
    return header + counter_bytes + aead.encrypt(nonce, payload, None)


@dataclass
class Keys:
    """What a session's index table holds: an object whose `receive` is an Opener."""

    receive: Any


def table(module: ModuleType, cipher: int, expires: float = EXPIRES,
          limit: int = REJECT_AFTER_MESSAGES) -> dict[bytes, Keys]:
    return {INDEX: Keys(module.Opener(KEY, expires, cipher, limit))}


def both() -> list[ModuleType]:
    return [datapath_module(name) for name in IMPLEMENTATIONS]


# --- sealing ---------------------------------------------------------------------------------


def test_seal_matches_the_layout(datapath: ModuleType, cipher: int) -> None:
    sealer = datapath.Sealer(KEY, HEADER, cipher)
    assert sealer.seal(b"hello", 7) == by_hand(b"hello", 7, cipher)
    assert sealer.seal(b"", 0) == by_hand(b"", 0, cipher)  # a keepalive: 32 bytes
    payloads = [bytes([i]) * 1440 for i in range(5)] + [b"short"]
    assert sealer.seal_batch(payloads, 2**40) == b"".join(
        by_hand(p, 2**40 + i, cipher) for i, p in enumerate(payloads))
    assert sealer.seal_batch([], 3) == b""


def test_the_ciphers_are_the_negotiated_ones(datapath: ModuleType, cipher: int) -> None:
    """The numbers a handshake negotiates (params.py) pick the same cipher in both twins, and
    the two ciphers never open each other's datagrams."""
    assert (datapath.CHACHA20_POLY1305, datapath.AES_256_GCM) == CIPHERS
    other = AES_256_GCM if cipher == CHACHA20_POLY1305 else CHACHA20_POLY1305
    assert datapath.Sealer(KEY, HEADER, cipher).seal(b"x", 1) != by_hand(b"x", 1, other)
    keys = table(datapath, cipher)
    ((verdict, _, _),) = datapath.open_batch(keys, by_hand(b"x", 1, other), 0, 1.0)
    assert verdict == verdicts.BAD_TAG
    assert keys[INDEX].receive.replay.state() == datapath.ReplayWindow().state()


@MANY
@given(st.lists(st.binary(max_size=1600), max_size=20),
       st.integers(min_value=0, max_value=2**64 - 64), st.binary(min_size=32, max_size=32),
       st.binary(min_size=4, max_size=4))
def test_c_and_python_seal_byte_identical(
    cipher: int, payloads: list[bytes], counter: int, key: bytes, index: bytes
) -> None:
    c, python = (m.Sealer(key, HEADER_TRANSPORT + index, cipher) for m in both())
    assert c.seal_batch(payloads, counter) == python.seal_batch(payloads, counter)
    if payloads:
        assert c.seal(payloads[0], counter) == python.seal(payloads[0], counter)


def split(payload: bytes, cuts: list[int]) -> list[bytes | memoryview]:
    """`payload` as parts cut at `cuts`, views and bytes alternating (some of them empty)."""
    bounds = [0, *sorted(cut % (len(payload) + 1) for cut in cuts), len(payload)]
    return [memoryview(payload)[a:b] if i % 2 else payload[a:b]
            for i, (a, b) in enumerate(itertools.pairwise(bounds))]


@MANY
@given(st.lists(st.tuples(st.binary(max_size=1600), st.lists(st.integers(0, 2000), max_size=6)),
                max_size=12),
       st.integers(min_value=0, max_value=2**64 - 64))
def test_a_payload_in_parts_seals_as_its_join_in_both(
    cipher: int, cut_payloads: list[tuple[bytes, list[int]]], counter: int
) -> None:
    """The channel hands a packet over as its parts: C encrypts them in turn, the twin joins
    them, and both give the datagram of the joined payload, alone or in a batch with whole ones."""
    payloads = [payload for payload, _ in cut_payloads]
    mixed: list[bytes | list[bytes | memoryview]] = [
        split(payload, cuts) if i % 3 else payload
        for i, (payload, cuts) in enumerate(cut_payloads)]
    expected = b"".join(by_hand(p, counter + i, cipher) for i, p in enumerate(payloads))
    for module in both():
        sealer = module.Sealer(KEY, HEADER, cipher)
        assert sealer.seal_batch(mixed, counter) == expected
        for payload, cuts in cut_payloads[:2]:
            assert sealer.seal(split(payload, cuts), counter) == by_hand(payload, counter, cipher)


def test_parts_are_checked_like_a_payload(datapath: ModuleType, cipher: int) -> None:
    sealer = datapath.Sealer(KEY, HEADER, cipher)
    half = bytes(MAX_PAYLOAD_SIZE // 2 + 1)
    with pytest.raises(ValueError):
        sealer.seal([half, half], 0)  # together longer than a datagram carries
    with pytest.raises(ValueError):
        sealer.seal_batch([b"ok", [half, memoryview(half)]], 0)
    with pytest.raises(TypeError):
        sealer.seal([b"ok", 7], 0)  # a part that is not a buffer
    assert sealer.seal([], 5) == sealer.seal(b"", 5)  # no parts: a keepalive


@pytest.mark.parametrize("counter", [-1, 2**64 - 1, 2**64])
def test_seal_refuses_counters_out_of_range(
    datapath: ModuleType, cipher: int, counter: int
) -> None:
    sealer = datapath.Sealer(KEY, HEADER, cipher)
    with pytest.raises(ValueError):
        sealer.seal(b"x", counter)
    with pytest.raises(ValueError):
        sealer.seal_batch([b"x"], counter)


def test_seal_refuses_bad_keys_and_oversized_payloads(datapath: ModuleType, cipher: int) -> None:
    with pytest.raises(ValueError):
        datapath.Sealer(KEY[:31], HEADER, cipher)
    with pytest.raises(ValueError):
        datapath.Sealer(KEY, HEADER[:7], cipher)
    with pytest.raises(ValueError):
        datapath.Opener(KEY + b"x", EXPIRES, cipher)
    with pytest.raises(ValueError):
        datapath.Sealer(KEY, HEADER, cipher).seal_batch([bytes(MAX_PAYLOAD_SIZE + 1)], 0)
    assert len(datapath.Sealer(KEY, HEADER, cipher).seal(bytes(MAX_PAYLOAD_SIZE), 0)) == 65507


@pytest.mark.parametrize("unknown", [0, 3, 255, -1])
def test_unknown_ciphers_and_limits_are_refused(
    datapath: ModuleType, cipher: int, unknown: int
) -> None:
    with pytest.raises(ValueError):
        datapath.Sealer(KEY, HEADER, unknown)
    with pytest.raises(ValueError):
        datapath.Opener(KEY, EXPIRES, unknown)
    for limit in (-1, 2**64):
        with pytest.raises(ValueError):
            datapath.Opener(KEY, EXPIRES, cipher, limit)


# --- opening ---------------------------------------------------------------------------------


def test_open_a_gro_buffer(datapath: ModuleType, cipher: int) -> None:
    keys = table(datapath, cipher)
    payloads = [bytes([i]) * 1000 for i in range(4)] + [b"last, shorter"]
    data = b"".join(by_hand(p, i, cipher) for i, p in enumerate(payloads))
    results = datapath.open_batch(keys, data, 1032, 1.0)
    assert results == [(verdicts.OK, keys[INDEX], p) for p in payloads]
    # The same buffer again: every segment is a replay, and nothing else changed.
    state = keys[INDEX].receive.replay.state()
    assert [v for v, _, _ in datapath.open_batch(keys, data, 1032, 1.0)] == [verdicts.REPLAY] * 5
    assert keys[INDEX].receive.replay.state() == state


def test_a_buffer_for_several_receivers(datapath: ModuleType, cipher: int) -> None:
    """Segments of one buffer for different indices each meet their own keys and owner: the C
    plane looks a receiver up once for a run of segments to it, never for the next index."""
    other_key = bytes(range(32, 64))
    keys = table(datapath, cipher)
    keys[OTHER_INDEX] = Keys(datapath.Opener(other_key, EXPIRES, cipher, REJECT_AFTER_MESSAGES))
    other_header = HEADER_TRANSPORT + OTHER_INDEX
    unknown_header = HEADER_TRANSPORT + b"\x99\x99\x99\x99"
    sequence = [(HEADER, KEY, INDEX), (HEADER, KEY, INDEX), (other_header, other_key, OTHER_INDEX),
                (unknown_header, KEY, None), (HEADER, KEY, INDEX),
                (other_header, other_key, OTHER_INDEX)]
    data = b"".join(by_hand(bytes([i]) * 100, i, cipher, key, header)
                    for i, (header, key, _) in enumerate(sequence))
    results = datapath.open_batch(keys, data, 132, 1.0)
    expected = [(verdicts.OK, keys[index], bytes([i]) * 100) if index is not None
                else (verdicts.UNKNOWN_INDEX, None, b"")
                for i, (_, _, index) in enumerate(sequence)]
    assert results == expected


def test_every_kind_of_bad_segment(datapath: ModuleType, cipher: int) -> None:
    keys = table(datapath, cipher)
    good = by_hand(b"a" * 50, 5, cipher)
    forged = bytearray(good)
    forged[40] ^= 1
    wrong_counter = good[:8] + (6).to_bytes(8, "little") + good[16:]  # the tag covers the nonce
    cases = [
        (good, verdicts.OK),
        (good, verdicts.REPLAY),
        (bytes(forged), verdicts.BAD_TAG),
        (wrong_counter, verdicts.BAD_TAG),
        (good[:31], verdicts.MALFORMED),  # truncated below header + tag
        (good[:-1], verdicts.BAD_TAG),  # truncated inside the ciphertext
        (b"\x04\x01\x00\x00" + good[4:], verdicts.MALFORMED),  # reserved byte set
        (HEADER_TRANSPORT + OTHER_INDEX + good[8:], verdicts.UNKNOWN_INDEX),
        (b"\x01" + good[1:], verdicts.NOT_TRANSPORT),  # another type: handed back raw
        (b"\x21rendezvous", verdicts.NOT_TRANSPORT),
        (by_hand(b"", 9, cipher), verdicts.OK),  # a keepalive
        (by_hand(b"x", 9 + 9000, cipher), verdicts.OK),  # far ahead: moves the window
        (by_hand(b"x", 9, cipher), verdicts.REPLAY),  # now too old
        (by_hand(b"x", 2**64 - 8192, cipher), verdicts.REPLAY),  # at REJECT_AFTER_MESSAGES
    ]
    for datagram, expected in cases:
        ((verdict, owner, payload),) = datapath.open_batch(keys, datagram, 0, 1.0)
        assert verdict == expected, datagram[:20].hex()
        if expected == verdicts.NOT_TRANSPORT:
            assert (owner, payload) == (None, datagram)
        elif expected != verdicts.OK:
            assert payload == b""
    assert datapath.open_batch(keys, b"", 0, 1.0) == [(verdicts.NOT_TRANSPORT, None, b"")]


def test_stale_keys_open_nothing_and_keep_their_window(datapath: ModuleType, cipher: int) -> None:
    keys = table(datapath, cipher, expires=10.0)
    state = keys[INDEX].receive.replay.state()
    ((verdict, owner, payload),) = datapath.open_batch(keys, by_hand(b"x", 1, cipher), 0, 10.0)
    assert (verdict, owner, payload) == (verdicts.STALE, keys[INDEX], b"")
    assert keys[INDEX].receive.replay.state() == state
    assert datapath.open_batch(keys, by_hand(b"x", 1, cipher), 0, 9.99)[0][0] == verdicts.OK


def test_no_counter_at_or_past_the_keys_limit_is_accepted(
    datapath: ModuleType, cipher: int
) -> None:
    """AES-256-GCM keys stop at 2^23 packets (constants.py): an authentic datagram at the limit
    is refused like a replay and leaves the window as it was; the one before it is accepted."""
    limit = AES_GCM_REJECT_AFTER_MESSAGES
    keys = table(datapath, cipher, limit=limit)
    assert keys[INDEX].receive.limit == limit
    state = keys[INDEX].receive.replay.state()
    for counter in (limit, limit + 1, 2**63):
        ((verdict, _, _),) = datapath.open_batch(keys, by_hand(b"x", counter, cipher), 0, 1.0)
        assert verdict == verdicts.REPLAY
    assert keys[INDEX].receive.replay.state() == state
    ((verdict, _, payload),) = datapath.open_batch(keys, by_hand(b"y", limit - 1, cipher), 0, 1.0)
    assert (verdict, payload) == (verdicts.OK, b"y")
    # Without a limit of its own, a key takes counters up to REJECT_AFTER_MESSAGES.
    unlimited = table(datapath, cipher)
    assert datapath.open_batch(unlimited, by_hand(b"x", limit, cipher), 0, 1.0)[0][0] == verdicts.OK


def test_a_forged_segment_does_not_move_the_window(datapath: ModuleType, cipher: int) -> None:
    """A forger who sends a huge counter must not push real packets out of the window."""
    keys = table(datapath, cipher)
    forged = bytearray(by_hand(b"x", 10**12, cipher))
    forged[-1] ^= 0x80
    data = bytes(forged) + by_hand(b"y", 3, cipher)
    results = datapath.open_batch(keys, data, len(forged), 1.0)
    assert [v for v, _, _ in results] == [verdicts.BAD_TAG, verdicts.OK]
    assert datapath.open_batch(keys, by_hand(b"z", 1, cipher), 0, 1.0)[0][0] == verdicts.OK


def test_table_values_without_an_opener_are_an_error(datapath: ModuleType, cipher: int) -> None:
    with pytest.raises((TypeError, AttributeError)):
        datapath.open_batch({INDEX: Keys(object())}, by_hand(b"x", 1, cipher), 0, 1.0)


# --- the twins agree on anything ---------------------------------------------------------------

# Segments sealed under either cipher: the keys under test must open their own cipher's and
# refuse the other's. Counters around the AES-256-GCM limit test the opener's `limit`.
SEGMENT = st.one_of(
    st.builds(by_hand, st.binary(max_size=64), st.integers(min_value=0, max_value=20_000),
              st.sampled_from(CIPHERS)),
    st.builds(lambda b, i, c, k: bytearray(by_hand(b, c, k)) if i < 0
              else _flip(by_hand(b, c, k), i),
              st.binary(max_size=64), st.integers(min_value=-1, max_value=95),
              st.integers(min_value=0, max_value=50), st.sampled_from(CIPHERS)),
    st.builds(by_hand, st.binary(max_size=16),
              st.integers(min_value=AES_GCM_REJECT_AFTER_MESSAGES - 3,
                          max_value=AES_GCM_REJECT_AFTER_MESSAGES + 3),
              st.sampled_from(CIPHERS)),
    st.binary(max_size=100),
    st.binary(max_size=40).map(lambda rest: HEADER + rest),
)


def _flip(datagram: bytes, position: int) -> bytes:
    flipped = bytearray(datagram)
    flipped[position % len(flipped)] ^= 0x01
    return bytes(flipped)


@MANY
@given(st.lists(SEGMENT, max_size=12), st.integers(min_value=0, max_value=120),
       st.floats(min_value=0.0, max_value=2 * EXPIRES),
       st.sampled_from((REJECT_AFTER_MESSAGES, AES_GCM_REJECT_AFTER_MESSAGES)))
def test_c_and_python_open_alike(
    cipher: int, segments: list[bytes], segment: int, now: float, limit: int
) -> None:
    """Any buffer and any segment size, valid, forged, truncated, replayed, past the key's
    limit, under the other cipher or garbage: the same verdicts, payloads and window states,
    call after call."""
    data = b"".join(bytes(s) for s in segments)
    c_keys, py_keys = (table(m, cipher, limit=limit) for m in both())
    c_module, py_module = both()
    for _ in range(2):  # the second pass sees every accepted segment as a replay
        c_results = c_module.open_batch(c_keys, data, segment, now)
        py_results = py_module.open_batch(py_keys, data, segment, now)
        assert [(v, p) for v, _, p in c_results] == [(v, p) for v, _, p in py_results]
        assert [o is c_keys.get(INDEX) for _, o, _ in c_results] == [
            o is py_keys.get(INDEX) for _, o, _ in py_results]
        assert c_keys[INDEX].receive.replay.state() == py_keys[INDEX].receive.replay.state()


# --- large AES-256-GCM payloads: C hands them to cryptography's AESGCM ---------------------------


def large_sizes() -> tuple[int, ...]:
    """Sizes around the one from which the C twin seals and opens AES-256-GCM payloads with
    cryptography's AESGCM instead of its own EVP context (`_datapath.c`, LARGE_PAYLOAD)."""
    threshold: int = datapath_module("c").LARGE_PAYLOAD
    return (threshold - 1, threshold, 16_000, MAX_PAYLOAD_SIZE)


def test_c_uses_cryptography_for_large_payloads_where_it_can(cipher: int) -> None:
    """Found at import wherever cryptography has the `_into` methods (45 and later)."""
    assert datapath_module("c").LARGE_AEAD is hasattr(AESGCM, "encrypt_into")


def test_large_payloads_seal_and_open_alike(datapath: ModuleType, cipher: int) -> None:
    """Whole, in parts and in a batch; opened, forged in the ciphertext or the tag, replayed:
    the same datagrams and verdicts as the layout by hand, and a forgery moves no window."""
    sealer, keys = datapath.Sealer(KEY, HEADER, cipher), table(datapath, cipher)
    window = keys[INDEX].receive.replay
    for size in large_sizes():
        counter = 2 * size
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        datagram, following = by_hand(payload, counter, cipher), by_hand(payload, counter + 1,
                                                                          cipher)
        parts = split(payload, [7, 300, size - 5])
        assert sealer.seal(payload, counter) == sealer.seal(parts, counter) == datagram
        assert sealer.seal_batch([parts, payload], counter) == datagram + following
        for forged in (_flip(datagram, 16 + size // 2), _flip(datagram, len(datagram) - 1)):
            before = window.state()
            assert datapath.open_batch(keys, forged, 0, 1.0) == [(verdicts.BAD_TAG, keys[INDEX],
                                                                  b"")]
            assert window.state() == before
        assert datapath.open_batch(keys, datagram + following, len(datagram), 1.0) == [
            (verdicts.OK, keys[INDEX], payload), (verdicts.OK, keys[INDEX], payload)]
        assert datapath.open_batch(keys, datagram, 0, 1.0) == [(verdicts.REPLAY, keys[INDEX],
                                                                b"")]


def test_a_frame_of_a_read_area_seals_alike_and_leaves_the_area_as_it_was(
        datapath: ModuleType, cipher: int) -> None:
    """A packet of a frame's data: small headers, then a view of a read area with bytes of the
    stream in front of it (where the C twin writes the headers for the call, then puts them
    back). Also the cases it must join instead: headers longer than the room in front, a
    read-only view, and a part of the very bytes in front (two frames of one area)."""
    sealer = datapath.Sealer(KEY, HEADER, cipher)
    area = bytearray(bytes(range(251)) * 300)  # 75,300 bytes: a read area and its lead
    original = bytes(area)
    view = memoryview(area)
    size = MAX_PAYLOAD_SIZE - 600
    headers = [b"\x01\x02", b"\x03" * 9, b"\x04" * 14]
    cases = {
        "room in front": [*headers, view[1000:1000 + size]],
        "no room in front": [*headers, view[3:3 + size]],
        "headers longer than the lead": [b"\x05" * 600, view[1000:1000 + size - 600]],
        "read-only view": [*headers, view.toreadonly()[1000:1000 + size]],
        "a part from the bytes in front": [b"\x06" * 5, view[980:990], view[1000:1000 + size]],
        "the whole area after its lead": [b"\x07" * 20, view[512:512 + size]],
    }
    for counter, (case, parts) in enumerate(cases.items()):
        payload = b"".join(bytes(p) for p in parts)
        assert sealer.seal(parts, counter) == by_hand(payload, counter, cipher), case
        assert sealer.seal_batch([parts, payload], counter) == by_hand(
            payload, counter, cipher) + by_hand(payload, counter + 1, cipher), case
        assert area == original, case


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=3),
       st.integers(min_value=0, max_value=AES_GCM_REJECT_AFTER_MESSAGES - 1),
       st.binary(min_size=1, max_size=64), st.lists(st.integers(0, 70_000), max_size=6))
def test_c_and_python_agree_on_large_payloads(
    cipher: int, which: int, counter: int, seed: bytes, cuts: list[int]
) -> None:
    """Random large payloads in random parts: the same datagram from both twins, and each
    opens the other's."""
    size = large_sizes()[which]
    payload = (seed * (size // len(seed) + 1))[:size]
    c, python = both()
    datagram = c.Sealer(KEY, HEADER, cipher).seal(split(payload, cuts), counter)
    assert datagram == python.Sealer(KEY, HEADER, cipher).seal(payload, counter)
    for module in (c, python):
        assert module.open_batch(table(module, cipher), datagram, 0, 1.0)[0][2] == payload
