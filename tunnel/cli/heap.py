"""Keep freed heap memory for the next allocation instead of handing it back to the kernel.

glibc's `free()` returns the top of the heap to the kernel once more than `M_TRIM_THRESHOLD`
bytes lie free there: 128 KiB, until the process happens to free a chunk that `malloc` had
mapped on its own (one above `M_MMAP_THRESHOLD`), which raises both thresholds for good. A node
that carries 65,000-byte datagrams (path-MTU discovery finds them on loopback and on jumbo-frame
LANs) allocates and frees a 64 KiB buffer for every datagram it opens, so the top of its heap
went back and forth: each buffer was faulted in again page by page, 130,000-160,000 minor page
faults per GiB received, 14 % of the receiving process's CPU in `perf` (the faults inside
`EVP_DecryptUpdate`, writing the plaintext). Whether a process paid it depended on its history
(in one run of four it did not). Fixed thresholds make it one behaviour: allocations up to
`MMAP_THRESHOLD` come from the heap, and up to `TRIM_THRESHOLD` of free memory stays at its top.
They also end the dynamic raise (up to 32 MiB), so an allocation above 1 MiB is mapped each time;
nothing that large is made per packet or per read (a datagram is at most 64 KiB, a bridge reads
its TCP socket into areas of 256 KiB).

What lies free at the top swings by what a busy tunnel holds in flight: a stream keeps its read
areas until the peer acknowledges them (a 2 MiB send buffer), a receiving node its datagrams until
the local socket takes them (a connection window of up to 24 MiB), and an acknowledgement frees
many at once. With 1 MiB kept, one connection at 65,000-byte datagrams still took about 24,000
faults per GiB (12 runs, median), 1.53 CPU s/GiB of both nodes and 929 MB/s; with `TRIM_THRESHOLD`
at 32 MiB, 5 faults per GiB, 1.44 s/GiB and 994 MB/s. The memory it keeps while data flows is
memory the transfer used a moment before, and the trims below give it back once it stops.

Keeping freed memory has a cost after a burst: free chunks in the middle of the heap (between
objects still alive) stay resident, and `free()` never gives them back. A node whose tunnels came
back from a NAT reboot at once (hundreds of waiting connections sent their data in the same second)
kept up to 5 MiB more for the rest of its life; 28 of its heap's 36 MiB were free. So a
long-running command also calls `malloc_trim(0)` (`trim_regularly`), which hands every free page
back (`madvise`): 9 ms to give back 126 MiB, 0.02 ms when there is nothing to give back. It does
so when the process goes quiet after being busy (a look finds it used under `QUIET_SHARE` of a
CPU since the last), and at least every `TRIM_EVERY` seconds. The looks come every `TRIM_CHECK`
seconds after one that found the process busy, and twice as far apart after each quiet one, up to
`TRIM_CHECK_MAX`: an idle node is woken by them once in 8 s instead of every 2 s. After a
transfer at loopback's path MTU the connecting node held 92 MiB, 47 of them free, until the next
30-s trim; now it gives them back 2-4 s after the transfer ends, and at most `TRIM_CHECK_MAX +
TRIM_CHECK` seconds after a burst that began in a quiet spell (1 s and 6 s after a 6-s and a
1.2-s upload). Trimming while data flows would cost the faults of those pages again, one per
4 KiB (32,000 for 126 MiB): a busy node keeps them until it goes quiet, or for `TRIM_EVERY`
seconds at most.

Only glibc has `mallopt` and `malloc_trim`; elsewhere (musl, macOS) nothing changes. A user who
tunes glibc's allocator through its environment variables keeps their settings.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from typing import Final

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3

MMAP_THRESHOLD: Final = 1 << 20  # the largest allocation served from the heap: 1 MiB
TRIM_THRESHOLD: Final = 32 << 20  # free memory kept at the heap's top: 32 MiB
TRIM_CHECK: Final = 2.0  # s between two looks at whether the process went quiet
TRIM_CHECK_MAX: Final = 8.0  # s: while quiet, the looks space out to this (an idle wake-up less)
QUIET_SHARE: Final = 0.02  # under this share of a CPU used since the last look: quiet
TRIM_EVERY: Final = 30.0  # s at most between two trims of a long-running command's heap
# The environment through which a user tunes glibc's allocator themselves.
USER_SETTINGS: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # the name is unknown outside glibc
        return False


def keep_freed_memory() -> bool:
    """Fix glibc's trim and mmap thresholds (see the module's docstring); True if set. Does
    nothing, and says why at debug level, outside glibc or where the user set their own."""
    if not is_glibc():
        log.debug("not glibc: the allocator stays as it is")
        return False
    chosen = [name for name in USER_SETTINGS if name in os.environ]
    if chosen:
        log.debug("%s set: glibc's allocator stays as configured", ", ".join(chosen))
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD,
                                                                 TRIM_THRESHOLD) != 1:
        log.debug("mallopt refused the heap's thresholds")
        return False
    log.debug("glibc's allocator: allocations up to %d KiB from the heap, up to %d KiB of free "
              "memory kept", MMAP_THRESHOLD >> 10, TRIM_THRESHOLD >> 10)
    return True


def resident_kib() -> int:
    """This process's resident memory, KiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def give_back_free_memory() -> int:
    """Hand every free page of the heap back to the kernel (glibc's `malloc_trim(0)`); the KiB
    of resident memory that went (0 if none, or outside glibc)."""
    if not is_glibc():
        return 0
    trim = ctypes.CDLL(None).malloc_trim
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    before = resident_kib()
    trim(0)
    return max(0, before - resident_kib())


class TrimSchedule:
    """When to give the heap's free pages back: at the first look that finds the process quiet
    after it was busy (a command starts busy: its imports and set-up), and at least every
    `TRIM_EVERY` seconds; `interval` is how long to wait for the next look (see the module's
    docstring)."""

    def __init__(self, now: float, cpu: float) -> None:
        self._last_trim = self._last_look = now
        self._last_cpu = cpu
        self._busy = True  # the CPU was used since the last trim
        self.interval = TRIM_CHECK

    def due(self, now: float, cpu: float) -> bool:
        """A look at `now` (monotonic s), the process having used `cpu` s of CPU in all: True
        if it should trim now."""
        quiet = cpu - self._last_cpu < QUIET_SHARE * (now - self._last_look)
        self._last_look, self._last_cpu = now, cpu
        self._busy = self._busy or not quiet
        self.interval = min(self.interval * 2, TRIM_CHECK_MAX) if quiet else TRIM_CHECK
        if (quiet and self._busy) or now - self._last_trim >= TRIM_EVERY:
            self._last_trim, self._busy = now, False
            return True
        return False


async def trim_regularly() -> None:
    """Give the heap's free pages back as `TrimSchedule` says, until cancelled. Run it where
    `keep_freed_memory()` set the thresholds."""
    schedule = TrimSchedule(time.monotonic(), time.process_time())
    while True:
        await asyncio.sleep(schedule.interval)
        if not schedule.due(time.monotonic(), time.process_time()):
            continue
        released = give_back_free_memory()
        if released >= 1024:
            log.debug("gave %d KiB of freed heap back to the kernel", released)
