"""Keep freed memory in the process instead of handing it back to the OS after every update.

A training update allocates and frees the same few dozen activation and
gradient buffers (megabytes each) every time. glibc's malloc returns such
blocks to the OS (above its moving mmap threshold, or when the free top of
the heap passes its trim threshold), so the next update faults the same pages
back in, zero-filled: about 8,000 page faults per LSTM 2x256 update on the CPU,
whose median update took 79 ms instead of 67 ms (``benchmarks/update_costs.py``).
Fixing both thresholds keeps the blocks for reuse; the peak memory is the same.
Other C libraries, and users who set glibc's MALLOC_* variables themselves, are
left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit: smaller blocks come from the heap
TRIM_THRESHOLD = 1 << 30  # the free top of the heap is kept up to this much
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Set glibc's thresholds so freed buffers are reused, not returned; True when they were set."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
