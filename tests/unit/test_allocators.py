"""A worker's allocators: jemalloc for Arrow and a fixed glibc mmap threshold, unless the environment
chose; checked in a fresh interpreter (the settings are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = (
    "import json, pyarrow as pa\n"
    "from flowlake.runtime.allocators import configure_worker_allocators\n"
    "done = configure_worker_allocators()\n"
    "print(json.dumps({'done': done, 'pool': pa.default_memory_pool().backend_name}))\n"
)


def probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    found: dict[str, object] = json.loads(out.stdout)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings are Linux-only")
def test_a_worker_gets_jemalloc_and_a_fixed_mmap_threshold() -> None:
    found = probe()
    assert found["pool"] == "jemalloc"
    assert found["done"] == ["arrow:jemalloc", "glibc:mmap_threshold=4194304", "glibc:arena_max=2"]


def test_what_the_environment_chose_is_kept() -> None:
    found = probe(ARROW_DEFAULT_MEMORY_POOL="system", GLIBC_TUNABLES="glibc.malloc.arena_max=4")
    assert found == {"done": [], "pool": "system"}
    assert probe(FLOWLAKE_ALLOCATORS="default")["done"] == []
