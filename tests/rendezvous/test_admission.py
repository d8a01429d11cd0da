"""The `--networks` file: what it admits, and the line of every mistake."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.admission import OPEN, parse_networks

FULL = bytes(range(32))


def test_open_by_default() -> None:
    assert OPEN.open and OPEN.admits(FULL) and OPEN.describe() == "open"


def test_full_and_short_ids_comments_blank_lines_and_capitals() -> None:
    text = f"# team\n\n  {FULL.hex().upper()}  # laptop and home\n{'ee' * 8}\n"
    policy = parse_networks(text, "nets")
    assert not policy.open and policy.describe() == "2 networks"
    assert policy.admits(FULL)
    assert policy.admits(b"\xee" * 8 + b"\x01" * 24)  # as `ptunnel id` shows it: a prefix
    assert not policy.admits(b"\xee" * 7 + b"\xef" + b"\x01" * 24)
    assert not policy.admits(FULL[:31] + b"\x00")


def test_an_empty_list_admits_nothing() -> None:
    policy = parse_networks("# nobody yet\n", "nets")
    assert not policy.open and not policy.admits(FULL) and policy.describe() == "0 networks"


@pytest.mark.parametrize(("text", "where"), [
    ("ab" * 32 + "\n" + "ab" * 31 + "\n", "nets:2:"),  # 62 digits
    ("zz" * 8, "nets:1:"),
    ("ab" * 8 + " " + "cd" * 8, "nets:1:"),  # two ids on one line
])
def test_mistakes_name_the_line(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=f"^{where} .* is not a network id; expected 16 or 64"):
        parse_networks(text, "nets")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        parse_networks(text, "nets")
    except ValueError as exc:
        assert str(exc).startswith("nets:") and "\n" not in str(exc)
