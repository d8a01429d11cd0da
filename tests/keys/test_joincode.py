"""Join codes: version 2 carries the rendezvous and its key; typos are refused; v1 still parses."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.keys.joincode import (
    JoinCode,
    JoinCodeError,
    decode_join_code,
    encode_join_code,
    encode_join_code_v2,
)

SECRET = bytes(range(32))
KEY = bytes(range(100, 132))


def test_v2_round_trip_carries_the_rendezvous_and_its_key() -> None:
    code = encode_join_code_v2(SECRET, KEY, ["vps.example.org:7000", "[2001:db8::1]:7000"])
    assert code.startswith("ptn2-") and all(len(g) <= 5 for g in code.split("-")[1:])
    assert decode_join_code(code) == JoinCode(SECRET, KEY, ("vps.example.org:7000",
                                                            "[2001:db8::1]:7000"))
    # Case, spaces and dashes do not matter; the line may carry a newline (`join -`).
    assert decode_join_code(code.upper().replace("-", " ") + "\n").servers[0] == (
        "vps.example.org:7000")


def test_v1_codes_are_still_accepted() -> None:
    old = encode_join_code(SECRET)
    assert old.startswith("ptn1-")
    assert decode_join_code(old) == JoinCode(SECRET)


@pytest.mark.parametrize("version", [1, 2])
def test_every_one_letter_typo_is_refused(version: int) -> None:
    code = (encode_join_code(SECRET) if version == 1
            else encode_join_code_v2(SECRET, KEY, ["198.51.100.7:7000"]))
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    letters = [i for i, c in enumerate(code) if i >= 5 and c != "-"]
    for i in letters:  # every position, including the last letter's unused bits
        for replacement in random.Random(i).sample(alphabet, 4):
            if replacement == code[i]:
                continue
            typo = code[:i] + replacement + code[i + 1 :]
            with pytest.raises(JoinCodeError):
                decode_join_code(typo)


def test_truncated_or_foreign_codes_say_what_is_wrong() -> None:
    code = encode_join_code_v2(SECRET, KEY, ["198.51.100.7:7000"])
    with pytest.raises(JoinCodeError, match=r"checksum|too short|base32"):
        decode_join_code(code[:-5])
    with pytest.raises(JoinCodeError, match="starts with 'ptn2-'"):
        decode_join_code("hello")
    with pytest.raises(JoinCodeError, match="letters after 'ptn1'"):
        decode_join_code(encode_join_code(SECRET)[:-3])


def test_encoder_refuses_what_no_code_can_carry() -> None:
    for servers in ([], ["a:1"] * 5, ["has space:1"], ["x" * 300]):
        with pytest.raises(ValueError):
            encode_join_code_v2(SECRET, KEY, servers)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_garbage_raises_only_join_code_error(text: str) -> None:
    try:
        decode_join_code(text)
    except JoinCodeError:
        pass
