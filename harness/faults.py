"""Storage faults on demand: a filesystem that fails, tears or slows chosen calls.

Wrap any fsspec filesystem; ``plan`` says which write/read calls (counted from 1) fail. A *torn*
write stores only the first half of the bytes and then fails, as a crash or a dropped connection
would leave them. Use :func:`faulty_catalog` to get a catalog whose warehouse goes through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from flowlake.io.fs import Storage
from flowlake.lake import Catalog, connect


@dataclass
class FaultPlan:
    """Which calls misbehave; counters say how many calls happened."""

    fail_writes: set[int] = field(default_factory=set)
    torn_writes: set[int] = field(default_factory=set)
    fail_reads: set[int] = field(default_factory=set)
    slow_seconds: float = 0.0
    writes: int = 0
    reads: int = 0
    injected: int = 0


class _TornStream:
    def __init__(self, inner: Any, plan: FaultPlan, torn: bool, fail: bool) -> None:
        self._inner, self._plan, self._torn, self._fail = inner, plan, torn, fail

    def write(self, data: Any) -> int:
        payload = bytes(memoryview(data))
        if self._torn:
            self._inner.write(payload[: len(payload) // 2])
            self._inner.close()
            self._plan.injected += 1
            raise OSError("injected fault: torn write")
        if self._fail:
            self._plan.injected += 1
            raise OSError("injected fault: write failed")
        return int(self._inner.write(payload))

    def close(self) -> None:
        if not self._inner.closed:
            self._inner.close()

    def __enter__(self) -> _TornStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return bool(self._inner.closed)


class FaultyHandler(pafs.FSSpecHandler):  # type: ignore[misc]
    """An fsspec-backed pyarrow filesystem handler that injects the plan's faults."""

    def __init__(self, fs: Any, plan: FaultPlan) -> None:
        super().__init__(fs)
        self.plan = plan

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        self.plan.writes += 1
        n = self.plan.writes
        if self.plan.slow_seconds:
            time.sleep(self.plan.slow_seconds)
        inner = super().open_output_stream(path, metadata)
        if n in self.plan.torn_writes or n in self.plan.fail_writes:
            stream = _TornStream(self.fs.open(path, "wb"), self.plan, n in self.plan.torn_writes, True)
            inner.close()
            return pa.PythonFile(stream, mode="w")
        return inner

    def open_input_file(self, path: str) -> Any:
        self.plan.reads += 1
        if self.plan.reads in self.plan.fail_reads:
            self.plan.injected += 1
            raise OSError("injected fault: read failed")
        return super().open_input_file(path)


def faulty_catalog(catalog: str, fs: Any, root: str, plan: FaultPlan) -> Catalog:
    """A catalog whose warehouse at ``root`` on fsspec filesystem ``fs`` goes through ``plan``."""
    base = connect(catalog=catalog, warehouse=f"memory://{root.strip('/')}")
    storage = Storage(
        uri=f"faulty://{root}", root=root, fs=pafs.PyFileSystem(FaultyHandler(fs, plan)), fsspec_fs=fs
    )
    return Catalog(base.store, storage, catalog_url=catalog)
