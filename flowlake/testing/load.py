"""CPU load beside a test: busy-loop processes, so timing-dependent bugs show up where they would.

A bug that needs a slow moment (a thread that falls behind, a commit that lands between two reads)
rarely shows on a quiet laptop and often on a loaded server. Run the tests that guard ordering and
recovery with the cores busy::

    >>> from flowlake.testing.load import cpu_hogs
    >>> with cpu_hogs(1) as hogs:
    ...     len(hogs)
    1
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

HOGS_ENV = "FLOWLAKE_TEST_CPU_HOGS"
"""Environment variable that overrides how many hogs the tests that ask for load start."""


def hog_count(default: int) -> int:
    """How many hogs to start: ``$FLOWLAKE_TEST_CPU_HOGS`` if set, else ``default``."""
    value = os.environ.get(HOGS_ENV, "").strip()
    return max(0, int(value)) if value else default


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run ``count`` processes that spin on a core each until the block ends (then kill them)."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield hogs
    finally:
        for proc in hogs:
            proc.kill()
        for proc in hogs:
            proc.wait()
