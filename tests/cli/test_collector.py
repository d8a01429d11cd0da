"""While a command's loop runs, the collector skips what start-up built and collects its youngest
generation less often (tunnel.cli.collector)."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

from tunnel.cli.collector import YOUNG_THRESHOLD, tuned_collector

ROOT = Path(__file__).resolve().parents[2]


def walked(obj: object) -> bool:
    """Whether the collector's generations hold `obj` (a frozen object is in none of them)."""
    return any(o is obj for o in gc.get_objects())


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_what_exists_is_frozen_within_and_walked_again_after() -> None:
    before = [object()]
    thresholds = gc.get_threshold()
    with tuned_collector() as frozen:
        after = [object()]
        assert frozen > 0 and gc.get_freeze_count() > 0
        assert not walked(before), "an object made before the loop is still walked"
        assert walked(after), "an object made while the loop runs must be collected as before"
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
    assert gc.get_freeze_count() == 0
    assert walked(before)
    assert gc.get_threshold() == thresholds


def test_a_window_of_packets_in_flight_starts_no_collection() -> None:
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    with tuned_collector():
        gc.callbacks.append(count)
        try:
            # more than a sending node keeps alive for its packets in flight: 10,000 containers
            in_flight = [[n, (n, 0, 1200, False)] for n in range(YOUNG_THRESHOLD // 4)]
        finally:
            gc.callbacks.remove(count)
        del in_flight
    assert collections == [], f"collections of generations {collections}"


def test_start_ups_own_garbage_is_freed_not_frozen() -> None:
    gc.disable()  # so that only the context manager's own collection can free the cycle
    try:
        cycle = Cycle()
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None
        with tuned_collector():
            assert gone() is None, "a garbage cycle was frozen instead of freed"
    finally:
        gc.enable()


def test_an_inner_loop_leaves_the_freeze_to_the_outer() -> None:
    before = [object()]
    with tuned_collector() as outer:
        with tuned_collector() as inner:
            assert inner == 0
        assert outer > 0 and gc.get_freeze_count() > 0  # still frozen
        assert not walked(before)
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() == 0


# A command's event loop (run_async) in a process of its own: no other test's objects involved.
COMMAND = f"""
import gc, sys
sys.path.insert(0, {str(ROOT)!r})
from tunnel.cli import runtime

marker = [object()]

async def main() -> str:
    frozen = gc.get_freeze_count() > 0
    young = gc.get_threshold()[0]
    return f"{{frozen}} {{any(o is marker for o in gc.get_objects())}} {{young}}"

print(runtime.run_async(main), gc.get_freeze_count(), any(o is marker for o in gc.get_objects()))
"""


def test_a_commands_loop_runs_with_start_up_frozen() -> None:
    done = subprocess.run([sys.executable, "-c", COMMAND], capture_output=True, text=True,
                          timeout=60, check=True)
    during_frozen, during_walked, young, after_count, after_walked = done.stdout.split()
    assert (during_frozen, during_walked) == ("True", "False"), done.stdout
    assert young == str(YOUNG_THRESHOLD), done.stdout
    assert (after_count, after_walked) == ("0", "True"), done.stdout
