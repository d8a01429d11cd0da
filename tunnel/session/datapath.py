"""The batched transport data plane: the C extension where it was built, else its Python twin.

`_datapath.c` (built by `build_datapath.py` where a C compiler and libcrypto were present at
install time) and `datapath_pure.py` have the same API and produce the same bytes and verdicts:

    Sealer(key, header).seal_batch(payloads, counter) -> datagrams back to back (one GSO run)
    Opener(key, expires)          # .replay is its ReplayWindow, .expires its deadline
    open_batch(table, data, segment, now) -> [(verdict, owner, payload), ...]  # one GRO buffer
    ReplayWindow().accept(counter, limit=REJECT_AFTER_MESSAGES) -> bool     # RFC 6479

`PTUNNEL_PURE=1` forces the twin (the switch that also forces the pure build of the rest).
`IMPLEMENTATION` says which one runs ("c" or "python"), for `ptunnel --version` and the tests.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from tunnel.session.datapath_pure import (
    BAD_TAG,
    MALFORMED,
    NOT_TRANSPORT,
    OK,
    REPLAY,
    STALE,
    UNKNOWN_INDEX,
    HasOpener,
)

__all__ = [
    "BAD_TAG", "IMPLEMENTATION", "MALFORMED", "NOT_TRANSPORT", "OK", "REPLAY", "STALE",
    "UNKNOWN_INDEX", "HasOpener", "Opener", "ReplayWindow", "Sealer", "open_batch",
]

PURE_ENV: Final = "PTUNNEL_PURE"

if TYPE_CHECKING:
    # The C types are checked against the twin's: one set of signatures for both.
    from tunnel.session.datapath_pure import Opener, ReplayWindow, Sealer, open_batch

    IMPLEMENTATION: str
elif os.environ.get(PURE_ENV) == "1":
    from tunnel.session.datapath_pure import Opener, ReplayWindow, Sealer, open_batch

    IMPLEMENTATION = "python"
else:
    try:
        from tunnel.session._datapath import Opener, ReplayWindow, Sealer, open_batch
    except ImportError:  # not built here (no compiler or no libcrypto headers at install)
        from tunnel.session.datapath_pure import Opener, ReplayWindow, Sealer, open_batch

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "c"
