"""Pins as a user meets them: the first connect says on the terminal which key it pinned;
`ptunnel pins list` shows name, fingerprint and first seen; `ptunnel pins forget NAME` removes
one, and an unknown name is a one-line error."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.cli import init, join, ptunnel, running
from tests.support.loopback import free_port

FIRST_SEEN = r"\d{4}-\d\d-\d\dT\d\d:\d\dZ"


def test_first_pin_is_shown_then_listed_and_forgotten(tmp_path: Path, rendezvous: str) -> None:
    home = init(tmp_path / "home")
    laptop = join(home, tmp_path / "laptop")
    key = json.loads(ptunnel("id", "--json", "--home", str(home)).stdout)["fingerprint"]
    with running("expose", str(free_port()), "--as", "Web", "--home", str(home),
                 "--rendezvous", rendezvous) as exposer:
        exposer.wait_for("exposing")
        with running("connect", "web", "-L", str(free_port()), "--home", str(laptop),
                     "--rendezvous", rendezvous, "-q") as connect:
            connect.wait_for("ready:")
            # On the terminal even with -q (no INFO log): a first pin is news.
            assert connect.wait_for("note: pinned").rstrip("\n") == (
                f"note: pinned the key of 'web': {key} (first contact)")
        with running("connect", "web", "-L", str(free_port()), "--home", str(laptop),
                     "--rendezvous", rendezvous) as again:
            again.wait_for("ready:")
            assert not any("note: pinned" in line for line in again.stderr)  # not news twice

    done = ptunnel("pins", "list", "--home", str(laptop))
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(f"web  {re.escape(key)}  first seen {FIRST_SEEN}\n", done.stdout), done
    (pin,) = json.loads(ptunnel("pins", "list", "--json", "--home", str(laptop)).stdout)
    assert pin["name"] == "web" and pin["fingerprint"] == key
    assert re.fullmatch(FIRST_SEEN, pin["first_seen"])

    done = ptunnel("pins", "forget", "WEB", "--home", str(laptop))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"forgot the key of 'web' ({key}); ")
    assert json.loads(ptunnel("pins", "list", "--json", "--home", str(laptop)).stdout) == []

    done = ptunnel("pins", "forget", "web", "--home", str(laptop))
    assert done.returncode == 2
    assert done.stderr == (f"ptunnel pins: error: no pin for 'web' in {laptop / 'known_nodes'}; "
                           "`ptunnel pins list` shows the pinned names\n")
