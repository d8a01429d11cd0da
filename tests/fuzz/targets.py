"""The table of fuzz targets: every parser of outside input, by name.

To fuzz a new parser, add a `Target(name, setup)` to the `TARGETS` of the file for its layer (or a
new file here, added below): `setup` returns the check and its seed inputs (see `target.py`).
`runner.py` runs them; `test_fuzz.py` runs them in CI.
"""

from __future__ import annotations

from tests.fuzz import channel_targets, rendezvous_targets, session_targets, text_targets
from tests.fuzz.target import Target

TARGETS: tuple[Target, ...] = (
    *session_targets.TARGETS,
    *channel_targets.TARGETS,
    *rendezvous_targets.TARGETS,
    *text_targets.TARGETS,
)

