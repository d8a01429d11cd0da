"""How many sockets forwarding may hold open: a budget below the process's descriptor limit.

Every forwarded TCP connection holds a socket on each side (the accepted local connection; the
connection to the service), and every UDP flow of an exposed service one. A peer may open 4,096
streams (`INITIAL_MAX_STREAMS`) and as many flows, far past the usual RLIMIT_NOFILE of 1,024.
Without a budget the process runs out of descriptors and then every `accept`, `connect` and
`socket` fails with EMFILE, the node's own included (issue 12, finding 8). So forwarding counts
the sockets it holds and refuses new ones past `budget_for(limit)`:

- the exposing side resets a new stream with `RESET_TOO_MANY_CONNECTIONS` before dialling, so
  the connecting side logs why; a datagram that would open a new UDP flow is dropped;
- the connecting side resets a newly accepted local connection at once.

Each burst of refusals logs one WARNING (a burst ends after REFUSAL_BURST_GAP without one);
every refusal is counted (`refused`). The CLI raises the soft limit to the hard one at start
(`tunnel.cli.runtime`), and the budget is taken when forwarding starts.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

log = logging.getLogger(__name__)

# Descriptors kept for the node itself: its UDP socket, the control socket, listening sockets,
# log files, the interpreter's own (about 64), and one port prediction (256 sockets at once).
FD_RESERVE: Final = 320
# s; refusals closer together than this are one burst, logged once.
REFUSAL_BURST_GAP: Final = 10.0


def descriptor_limit() -> int:
    """The process's soft RLIMIT_NOFILE (a large number when unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def budget_for(limit: int) -> int:
    """Sockets forwarding may hold under a descriptor limit of `limit`: all but FD_RESERVE,
    and at most half when the limit is so low that the reserve would take most of it."""
    return max(0, limit - min(FD_RESERVE, limit // 2))


class SocketBudget:
    """Counts the sockets forwarding holds; `acquire` refuses past the budget."""

    def __init__(self, limit: int) -> None:
        self.set_limit(limit)
        self.in_use = 0
        self.refused = 0
        self._last_refusal = float("-inf")

    def set_limit(self, limit: int) -> None:
        """Budget for a descriptor limit of `limit` (taken again once the CLI raised it)."""
        self.limit = limit
        self.budget = budget_for(limit)

    def acquire(self, now: float, what: str) -> bool:
        """Take one socket for `what` ("a stream from SHA256:…"); False past the budget."""
        if self.in_use < self.budget:
            self.in_use += 1
            return True
        self.refused += 1
        if now - self._last_refusal >= REFUSAL_BURST_GAP:
            log.warning("refusing %s: forwarding holds %d sockets, its budget under the "
                        "descriptor limit of %d; more are refused until some close (raise the "
                        "limit with `ulimit -n` or systemd's LimitNOFILE=)", what, self.in_use,
                        self.limit)
        else:
            log.debug("refusing %s: %d sockets in use", what, self.in_use)
        self._last_refusal = now
        return False

    def release(self) -> None:
        self.in_use = max(0, self.in_use - 1)
