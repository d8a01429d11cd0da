"""The heap keeps what it frees (tunnel.cli.heap): a 64 KiB buffer a datagram is not faulted in
again page by page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunnel.cli import heap

ROOT = Path(__file__).resolve().parents[2]

# Three 65,000-byte buffers alive at once, then freed, as a node opening a run of large
# datagrams does: 192 KiB free at the heap's top is more than glibc's default trim threshold.
CHURN = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
if sys.argv[1] == "kept":
    from tunnel.cli.heap import keep_freed_memory
    assert keep_freed_memory()

def churn():
    buffers = [bytearray(65000) for _ in range(3)]
    del buffers

for _ in range(20):
    churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(500):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in heap.USER_SETTINGS}
    done = subprocess.run([sys.executable, "-c", CHURN, mode], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not heap.is_glibc(), reason="mallopt is glibc's")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = page_faults("default"), page_faults("kept")
    # 1,500 allocations of 16 pages each: glibc's defaults fault most of them in again.
    assert default > 2_000, f"the defaults did not trim this time ({default} faults)"
    assert kept < 200, f"{kept} page faults with the heap kept, {default} without"


def test_a_users_own_allocator_settings_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert heap.keep_freed_memory() is False


def test_nothing_to_do_outside_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(os, "confstr", unknown)
    assert heap.is_glibc() is False
    assert heap.keep_freed_memory() is False
