"""Keep the cyclic garbage collector off the objects start-up made.

CPython's collector walks every tracked object of the generations it collects, and its oldest
generation holds what the imports and the command's set-up built: about 35,000 objects in a
node (classes, functions, the modules' tables), none of which ever becomes garbage. A node
carrying data allocates container objects for each packet (its frames, its record in the loss
recovery, a view of its bytes), and enough of them live for a round trip to be promoted, so a
full collection came about every 0.2 s of a bulk transfer at MTU 1,500 and walked everything:
about 8 ms each, half the collector's time and about 4 % of the sending node's CPU. (A
ping-pong hardly collects at all: what a round trip allocates is freed before the next one.)

`gc.freeze()` moves every object that exists when the event loop starts into a permanent
generation that no collection walks; what the loop creates afterwards (sessions, streams,
packets) is collected as before. `gc.collect()` first, so that start-up's own garbage is freed
rather than frozen. An object frozen here that becomes garbage later is never freed: start-up
objects are the process's for life, so that is at most a few of them, once. Leaving the loop
unfreezes them (a test, or the CLI's own tests, may run several loops in one process).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def startup_objects_frozen() -> Iterator[int]:
    """Within: what exists now is out of the collector's walks; yields how many objects that
    is. Nested or concurrent use (a second loop in another thread) leaves the freeze to the
    outermost, and yields 0."""
    if gc.get_freeze_count():
        yield 0
        return
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%d objects of start-up frozen: the collector no longer walks them", frozen)
    try:
        yield frozen
    finally:
        gc.unfreeze()
