"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import pytest
from natlab import Lab, reap_stale_labs, require_netns

# --- NAT lab (tests/natlab.py) ----------------------------------------------------------------
LabFactory = Callable[[Sequence[str]], Lab]


@pytest.fixture
def natlab() -> Iterator[LabFactory]:
    """Build labs with `natlab(["cone", "symmetric"])`; all are torn down after the test.

    Skips without root or `ip netns`, unless PTUNNEL_REQUIRE_NETNS=1 (CI): then it fails.
    """
    require_netns()
    reap_stale_labs()
    labs: list[Lab] = []

    def make(kinds: Sequence[str]) -> Lab:
        lab = Lab(kinds, prefix=f"ptl{os.getpid()}x{len(labs)}")
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()
