"""Workers fix glibc's mmap threshold so that freed state arrays go back to the system."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from flowlake.runtime.memory import return_freed_memory

_RSS_AFTER_CHURN = """
import sys
import numpy as np
from flowlake.runtime.memory import return_freed_memory
if sys.argv[1] == "fixed":
    assert return_freed_memory()
a = np.ones(3_000_000)  # 24 MB, mapped; freeing it raises glibc's threshold to 24 MB
del a
keep, grown = [], np.zeros(0)
for i in range(200):  # a state array grown by reallocation, small arrays kept between
    grown = np.concatenate([grown, np.ones(10_000)])
    keep.append(np.ones(1000))
del grown
print([int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")][0])
"""


def test_the_environment_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert return_freed_memory() is False


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_leave_the_heap_with_a_fixed_threshold() -> None:
    def rss_kb(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _RSS_AFTER_CHURN, mode], check=False, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert rss_kb("fixed") < rss_kb("default") - 25_000  # the grown array's holes: ~46 MB of them
