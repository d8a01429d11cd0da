"""The documented samples that ship inside the package, in `tunnel/data/`: the reference
config files (`ptunnel config example`) and the systemd unit (`ptunnel service print`).

They live in the package, not beside it, so that an installed ptunnel has them; this is the
only copy (the README links here).
"""

from __future__ import annotations

from importlib import resources

CONFIG_SAMPLES = {"node": "node.yaml", "rendezvous": "rendezvous.yaml"}
UNIT = "ptunnel.service"


def read_sample(filename: str) -> str:
    """The text of `tunnel/data/<filename>`."""
    return (resources.files("tunnel") / "data" / filename).read_text(encoding="utf-8")
