"""Allocator settings for a long-running worker whose memory comes and goes in large arrays.

A dataflow worker folds batches of up to a million rows into states of millions: Arrow buffers and
numpy arrays of tens of megabytes are made and freed every batch. Measured on the DWD join over 10M
orders (``benchmarks/restart.py``), the worker's anonymous memory peaked at 2.6 GB while the
allocations alive at its peak were ~1.4 GB: the rest was freed memory the allocators kept. Two
allocators keep it:

- Arrow's default pool (mimalloc in pyarrow's wheels) held most of it; jemalloc, which returns
  freed pages after a short decay, held ~0.9 GB less with the same speed.
- glibc raises its mmap threshold as large blocks are freed (up to 32 MiB), after which arrays of a
  few megabytes come from the heap and leave holes it cannot return; a fixed threshold of 4 MiB and
  at most two arenas held ~0.5 GB less (a 1 MiB threshold made every mid-sized array a fresh mapping
  and cost latency).

:func:`configure_worker_allocators` applies both, unless the environment chose already:
``ARROW_DEFAULT_MEMORY_POOL`` (Arrow's own variable) or ``GLIBC_TUNABLES`` naming a ``malloc``
setting leave that allocator alone, and ``FLOWLAKE_ALLOCATORS=default`` leaves both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

import pyarrow as pa

ENV = "FLOWLAKE_ALLOCATORS"
"""``default``: keep the allocators' own settings."""
MMAP_THRESHOLD = 4 << 20
"""glibc serves blocks of this size and more with their own mapping (returned when freed)."""
ARENA_MAX = 2
"""glibc's most arenas (each thread that allocates may otherwise get its own, which keeps its frees)."""
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_log = logging.getLogger(__name__)


def configure_worker_allocators() -> list[str]:
    """Set Arrow's pool to jemalloc and glibc's mmap threshold and arenas (see the module), where
    available and not chosen by the environment; returns what was set.

    >>> os.environ[ENV] = "default"
    >>> configure_worker_allocators()
    []
    >>> del os.environ[ENV]
    """
    if os.environ.get(ENV, "").strip().lower() == "default":
        return []
    done = []
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
            done.append("arrow:jemalloc")
        except (NotImplementedError, pa.ArrowNotImplementedError):  # a pyarrow built without it
            pass
    if "malloc" not in os.environ.get("GLIBC_TUNABLES", ""):
        done += _glibc_settings()
    if done:
        _log.debug("worker allocators: %s", ", ".join(done))
    return done


def _glibc_settings() -> list[str]:
    name = ctypes.util.find_library("c")
    if name is None:
        return []
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return []
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = []
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
        done.append(f"glibc:mmap_threshold={MMAP_THRESHOLD}")
    if mallopt(_M_ARENA_MAX, ARENA_MAX) == 1:
        done.append(f"glibc:arena_max={ARENA_MAX}")
    return done
