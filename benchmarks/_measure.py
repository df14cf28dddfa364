"""Measuring what benchmarks report the same way in every script: process memory, state snapshots."""

from __future__ import annotations

import copy
import pickle
import time
from pathlib import Path
from typing import Any


def proc_status_kb(field: str, pid: int | str = "self") -> int | None:
    """A ``/proc/<pid>/status`` figure in kB (``VmRSS``, ``VmHWM``, ...), None where there is none.

    The kernel's own per-process figures: ``ru_maxrss`` would include a parent's, across exec.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def snapshot(state: Any) -> tuple[bytes, float, int]:
    """What bytewax does with an operator state at the end of an epoch (a deep copy, pickled): the
    pickle, the seconds it took, and the bytes written (the pickle plus the chunk files a chunked
    state wrote for it, from its ``snapshot_bytes``)."""
    written = state.snapshot_bytes
    started = time.perf_counter()
    blob = pickle.dumps(copy.deepcopy(state))
    seconds = time.perf_counter() - started
    return blob, seconds, len(blob) + state.snapshot_bytes - written
