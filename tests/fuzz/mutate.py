"""A seeded mutational fuzzer's mutations, in pure Python (after libFuzzer's and AFL's).

`mutate(data, rng, corpus, max_size)` applies one to eight of: bit flips, random bytes,
"interesting" values (varint and length boundaries: 0x00, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff and
runs of them), truncation, extension with random or repeated bytes, deletion and duplication of a
range, and splicing with another input of the corpus. Every choice comes from `rng`, so a seed
reproduces a run exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

INTERESTING_BYTES = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFE, 0xFF)
INTERESTING_RUNS = (
    b"\xff" * 8,  # the largest 8-byte varint, u64 max
    b"\xc0\x00\x00\x00\x00\x00\x00\x00",  # an 8-byte varint of value 0 (non-minimal)
    b"\x7f\xff\xff\xff",  # i32 max
    b"\x80\x00\x00\x00",
    b"\x00" * 4,
    b"\x40\x00",  # a 2-byte varint of value 0
)

Mutation = Callable[[bytearray, random.Random, Sequence[bytes]], None]


def _flip_bit(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    if buf:
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)


def _random_byte(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    if buf:
        buf[rng.randrange(len(buf))] = rng.randrange(256)


def _interesting_byte(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    if buf:
        buf[rng.randrange(len(buf))] = rng.choice(INTERESTING_BYTES)


def _interesting_run(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    run = rng.choice(INTERESTING_RUNS)
    at = rng.randrange(len(buf) + 1)
    if rng.random() < 0.5:
        buf[at : at + len(run)] = run  # overwrite
    else:
        buf[at:at] = run  # insert


def _truncate(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    if buf:
        del buf[rng.randrange(len(buf)) :]


def _extend(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    count = rng.choice((1, 2, 4, 8, 64, 512))
    if buf and rng.random() < 0.5:
        buf += bytes((buf[-1],)) * count
    else:
        buf += rng.randbytes(count)


def _insert_random(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    at = rng.randrange(len(buf) + 1)
    buf[at:at] = rng.randbytes(rng.choice((1, 2, 3, 8)))


def _delete_range(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    if buf:
        start = rng.randrange(len(buf))
        del buf[start : start + rng.choice((1, 2, 4, 16, 64))]


def _duplicate_range(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    if buf:
        start = rng.randrange(len(buf))
        chunk = buf[start : start + rng.choice((1, 4, 16, 64, 256))]
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = chunk * rng.choice((1, 2, 8))


def _splice(buf: bytearray, rng: random.Random, corpus: Sequence[bytes]) -> None:
    other = rng.choice(corpus) if corpus else b""
    cut = rng.randrange(len(buf) + 1)
    other_cut = rng.randrange(len(other) + 1)
    buf[cut:] = other[other_cut:]


MUTATIONS: tuple[Mutation, ...] = (
    _flip_bit,
    _random_byte,
    _interesting_byte,
    _interesting_run,
    _truncate,
    _extend,
    _insert_random,
    _delete_range,
    _duplicate_range,
    _splice,
)


def mutate(data: bytes, rng: random.Random, corpus: Sequence[bytes], max_size: int) -> bytes:
    """A mutant of `data`; deterministic for a given state of `rng`."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        rng.choice(MUTATIONS)(buf, rng, corpus)
    return bytes(buf[:max_size])
