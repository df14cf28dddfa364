"""Process-wide memory settings of long-running workers.

glibc's allocator serves a request from its heap unless it is at least the *mmap threshold*, and it
raises that threshold (up to 32 MiB) each time a mapped block is freed. A dataflow worker grows its
per-row state arrays (counts, hashes, indexes: megabytes each) by reallocation every batch, so once
the threshold has risen they come from the heap, and the heap cannot give back the holes they leave:
the process's resident memory grows well past what it holds. A fixed threshold keeps every block of
:data:`MMAP_THRESHOLD` or more in a mapping of its own, returned to the system when freed (measured:
a join partition of 4M orders holds 449 MB resident instead of 621 MB; ``benchmarks/restart.py``).
``MALLOC_MMAP_THRESHOLD_`` in the environment, glibc's own setting, still wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 1 << 20
"""Blocks from this size on get mappings of their own."""

_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the mmap threshold (malloc.h)."""


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False where there is no glibc (or the
    environment sets it already).

    >>> isinstance(return_freed_memory(), bool)
    True
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
