"""What the fuzzer runs: a named parser with its seed corpus and the properties it must keep.

A `Target` is a row of the table in `targets.py`. `setup()` builds whatever state the parser
needs (keys, a session pair, a channel) once per run and returns the `Check` to call on every
input together with the seed inputs. A check feeds one input to the parser and asserts its
properties: that only the documented error type escapes (the check catches exactly that one),
that a decoder returns None or a value of its type, and that rejected input changes no state
where that can be seen. Anything else raising out of a check is a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: feeds one input to the parser and raises on a broken property
Check = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    #: builds the parser's state; returns the check and the seed inputs (all must pass)
    setup: Callable[[], tuple[Check, list[bytes]]]
    #: bytes; longer mutants are cut (a parser's cost should not be the fuzzer's bottleneck)
    max_size: int = 2048
