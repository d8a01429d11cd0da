"""Keep the cyclic garbage collector off a node's packets and off the objects start-up made.

CPython's collector walks every tracked object of the generations it collects. Its oldest
generation holds what the imports and the command's set-up built: about 35,000 objects in a
node (classes, functions, the modules' tables), none of which ever becomes garbage. A node
carrying data allocates container objects for each packet (its frames, its record in the loss
recovery, a view of its bytes) that live until the packet is acknowledged, so the count of
objects alive swings by a few thousand as packets go out and their ACKs come back. With
CPython's threshold (a collection of the youngest generation once 700 more objects were
allocated than freed), a sending node at MTU 1,500 collected about 600 times a second: each
collection walked the packets in flight and promoted them, the next generations walked them
again, and a full collection (about every 0.2 s) walked all of start-up as well, 8 ms each.

So, while a command's event loop runs:
- `gc.freeze()` moves every object that exists when the loop starts into a permanent generation
  that no collection walks. `gc.collect()` first, so that start-up's own garbage is freed rather
  than frozen. An object frozen here that becomes garbage later is never freed: start-up objects
  are the process's for life, so that is at most a few of them, once.
- The youngest generation is collected once `YOUNG_THRESHOLD` more objects were allocated than
  freed, above what a window of packets in flight keeps alive, so a transfer hardly ever
  triggers a collection. Garbage that only the collector can free (reference cycles) waits for
  at most that many allocations: a few MiB at worst, where a node's resident size is about 45.

Leaving the loop undoes both (a test, or the CLI's own tests, may run several loops in one
process). What the loop creates is collected as before, only less often.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from typing import Final

log = logging.getLogger(__name__)

# Objects allocated but not yet freed that start a collection of the youngest generation
# (CPython's default: 700). A sending node at MTU 1,500 keeps a few thousand alive for its packets
# in flight; in an A/B run of 10 rounds its CPU per GiB went from 2.86 s at 700 to 2.57 at 20,000
# and 2.50 at 50,000. A collection's pause grows with the threshold: 0.6 ms for 20,000 young
# objects here, 1.7 ms for 50,000.
YOUNG_THRESHOLD: Final = 20_000


@contextlib.contextmanager
def tuned_collector() -> Iterator[int]:
    """Within: what exists now is out of the collector's walks, and the youngest generation is
    collected at `YOUNG_THRESHOLD`; yields how many objects were frozen. Nested or concurrent
    use (a second loop in another thread) leaves both to the outermost, and yields 0."""
    if gc.get_freeze_count():
        yield 0
        return
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    frozen = gc.get_freeze_count()
    log.debug("%d objects of start-up frozen; youngest generation collected at %d", frozen,
              YOUNG_THRESHOLD)
    try:
        yield frozen
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
