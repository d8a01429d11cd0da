"""The index table on its own: random indices never collide, removal frees them, unknown is None."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.session_harness import SeededRng
from tunnel.session.indextable import IndexTable
from tunnel.session.wire import INDEX_SIZE


class SmallRng:
    """A seeded rng that only ever draws from `n` distinct indices, so collisions are frequent."""

    def __init__(self, seed: int, n: int) -> None:
        self._random = random.Random(seed)
        self.pool = [i.to_bytes(INDEX_SIZE, "little") for i in range(n)]
        self.draws = 0

    def __call__(self, size: int) -> bytes:
        assert size == INDEX_SIZE
        self.draws += 1
        return self._random.choice(self.pool)


def test_indices_are_four_random_bytes_from_the_injected_rng() -> None:
    table: IndexTable[str, str] = IndexTable(SeededRng(1))
    index = table.add_handshake("session")
    assert len(index) == INDEX_SIZE
    assert index == SeededRng(1)(INDEX_SIZE)  # the rng's first draw: nothing else consumed it


def test_allocation_never_collides_even_when_the_rng_repeats_itself() -> None:
    rng = SmallRng(seed=7, n=16)
    table: IndexTable[str, str] = IndexTable(rng)
    handshakes = [table.add_handshake(f"h{i}") for i in range(8)]
    keypairs = []
    for i in range(8):
        index = table.new_index()  # not claimed until `add_keypair`: claim each before the next
        table.add_keypair(index, f"k{i}")
        keypairs.append(index)
    assert sorted(handshakes + keypairs) == sorted(rng.pool)  # all 16, each once
    assert rng.draws > 16  # collisions happened and were drawn again
    assert len(table) == 16


def test_new_index_does_not_claim_and_avoids_both_kinds() -> None:
    rng = SmallRng(seed=3, n=3)
    table: IndexTable[str, str] = IndexTable(rng)
    handshake = table.add_handshake("h")
    keypair_index = table.new_index()
    table.add_keypair(keypair_index, "k")
    free = table.new_index()
    assert free not in (handshake, keypair_index)
    assert free not in table and table.handshake(free) is None and table.keypair(free) is None


def test_lookup_finds_each_kind_only_in_its_own_map() -> None:
    table: IndexTable[str, str] = IndexTable(SeededRng(2))
    h = table.add_handshake("waiting for a response")
    k = table.new_index()
    table.add_keypair(k, "keys")
    assert table.handshake(h) == "waiting for a response" and table.keypair(h) is None
    assert table.keypair(k) == "keys" and table.handshake(k) is None
    assert dict(table.handshakes) == {h: "waiting for a response"}
    assert dict(table.keypairs) == {k: "keys"}


def test_unknown_index_is_none() -> None:
    table: IndexTable[str, str] = IndexTable(SeededRng(3))
    table.add_handshake("h")
    unknown = bytes(INDEX_SIZE)
    assert unknown not in table
    assert table.handshake(unknown) is None and table.keypair(unknown) is None
    assert table.handshake(b"") is None and table.keypair(b"\x01" * 9) is None


def test_removal_frees_the_index_of_either_kind_and_ignores_unknown() -> None:
    table: IndexTable[str, str] = IndexTable(SeededRng(4))
    h = table.add_handshake("h")
    k = table.new_index()
    table.add_keypair(k, "k")
    table.remove(h)
    assert table.handshake(h) is None and h not in table and k in table
    table.remove(k)
    assert table.keypair(k) is None and len(table) == 0
    table.remove(k)  # twice: no error
    table.remove(bytes(INDEX_SIZE))


def test_a_handshake_index_can_be_handed_on_to_its_keypair() -> None:
    """The initiator's path: the index the responder knows names the keys once they exist."""
    table: IndexTable[str, str] = IndexTable(SeededRng(5))
    index = table.add_handshake("session")
    table.remove(index)
    table.add_keypair(index, "keys")
    assert table.keypair(index) == "keys" and table.handshake(index) is None


def test_keypairs_view_is_live() -> None:
    """The device binds `keypairs` once for the hot path; later changes must show through it."""
    table: IndexTable[str, str] = IndexTable(SeededRng(6))
    view = table.keypairs
    index = table.new_index()
    table.add_keypair(index, "keys")
    assert view.get(index) == "keys"
    table.remove(index)
    assert index not in view


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["handshake", "keypair", "remove"]), st.integers(0, 63))))
def test_any_sequence_of_operations_keeps_indices_unique(ops: list[tuple[str, int]]) -> None:
    table: IndexTable[int, int] = IndexTable(SmallRng(seed=11, n=64))
    live: dict[bytes, tuple[str, int]] = {}  # the model: index -> (kind, value)
    for i, (op, pick) in enumerate(ops):
        if op == "remove":
            if live:
                index = sorted(live)[pick % len(live)]
                table.remove(index)
                del live[index]
            continue
        if len(live) == 64:
            continue  # the small pool is exhausted; the real one (2^32) never is
        if op == "handshake":
            index = table.add_handshake(i)
        else:
            index = table.new_index()
            table.add_keypair(index, i)
        assert index not in live
        live[index] = (op, i)
    assert len(table) == len(live)
    for index, (kind, value) in live.items():
        found = table.handshake(index) if kind == "handshake" else table.keypair(index)
        assert found == value
