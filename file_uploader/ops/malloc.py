"""glibc's allocator told to keep the memory of parts between one part and the next.

Every socket read is a fresh bytes object of up to 256 KiB, kept as one of
its part's pieces until S3 has the part (storage/holding.py; when this was
measured, the pieces were also joined into one 8 MiB buffer per part, which
they no longer are). By default glibc serves blocks that large with mmap
and gives them back to the kernel with munmap when they are freed, or trims
the heap once more than twice the largest freed block sits free at its top;
either way the next part faults the same pages in again: 20,000-100,000
minor page faults per GiB uploaded. Told to keep the memory (below), the
gateway took ~10, and in 12 uploads of 1 GiB interleaved with as many of the
code before, 0.10 s/GiB less system time and 0.06 s/GiB less CPU in all
(1.31 against 1.37 s/GiB, median), with a lower peak RSS.

What it costs: memory freed by parts stays in the process, for the next
parts, instead of going back to the kernel after each burst. What the
pipeline can hold at once is bounded by MEMORY_BUDGET whatever the
allocator does, and RSS after a burst stays near the burst's peak (at most
TRIM_THRESHOLD of free memory at the top of each heap).

A deployment that sets glibc's own variables (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, MALLOC_ARENA_MAX or GLIBC_TUNABLES) keeps its choice: nothing is set
then. Other C libraries (musl has no mallopt) are left as they are.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Blocks below this come from the heap, not from mmap: glibc's largest allowed
# value on 64-bit systems (HEAP_MAX_SIZE / 2), above the default 8 MiB parts.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of a heap that glibc keeps rather than trims: room for
# the parts in flight of a few uploads to be freed and taken again.
TRIM_THRESHOLD = 128 << 20
# One heap for every thread. Worker threads (asyncio.to_thread: a part's MD5 or SHA-256)
# would otherwise each get a heap of their own that keeps its own free memory: 50 MiB
# more RSS in the profile, when parts were still joined there. What they allocate takes
# the heap's lock a few times a second, nothing to contend over.
ARENA_MAX = 1

# What a deployment sets to choose for itself (glibc reads them at startup).
OWN_CHOICE = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")

_done = False


def keep_part_memory() -> bool:
    """Tell glibc to keep freed part-sized blocks for reuse (once per process); whether it did."""
    global _done
    if _done:
        return True
    if any(name in os.environ for name in OWN_CHOICE):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library Python itself runs on
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 on success. Setting either turns off glibc's own sliding thresholds.
    chosen = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_ARENA_MAX, ARENA_MAX),
    )
    if not all(mallopt(param, value) for param, value in chosen):
        log.info("the C library refused the allocator settings: part memory goes back after each part")
        return False
    _done = True
    return True
