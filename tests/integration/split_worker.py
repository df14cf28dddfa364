"""A process for the split-under-load tests (run as a script).

Each process warms up, writes ``<ledger>.ready`` and waits for the ``go`` file (``start stop``, epoch
seconds). Each stops at ``stop`` or as soon as the file ``<go>.halt`` exists (the test writes it once
what it waits for has happened, so a slow machine writes longer rather than less). ``write`` mode: from
``start`` until then, commit a random batch every ~50 ms:
1-400 random keys of ``keys``, upserted, or (one commit in ten) deleted; and ledger each landed
commit as ``ok <i> <version> <ms> <fence_ms>`` (``fence_ms``: the longest the commit waited for the
bucket map to be free of fences on its buckets); :func:`batch` rebuilds commit ``i`` from the writer's
seed.

``compact`` mode: call ``compact()`` every ``period`` seconds until ``stop``; ledger each call as JSON
(the commit's version, summary and duration, or the error).
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

import flowlake as fl
import flowlake.table.commit as commit_module
from flowlake.catalog.base import MetaStore, TableRecord
from flowlake.table.bucketmap import BucketMap

SCHEMA = pa.schema([("k", pa.int64()), ("writer", pa.int64()), ("seq", pa.int64()), ("pad", pa.string())])


def batch(writer: int, i: int, keys: int) -> tuple[bool, pa.Table]:
    """``(is_delete, rows)`` of commit ``i`` of writer ``writer``."""
    rng = random.Random(writer * 1_000_003 + i)
    ks = rng.sample(range(keys), rng.randint(1, 400))
    if rng.random() < 0.1:
        return True, pa.table({"k": ks}, schema=pa.schema([SCHEMA.field("k")]))
    n = len(ks)
    return False, pa.table(
        {"k": ks, "writer": [writer] * n, "seq": [i] * n, "pad": [f"w{writer}-{i}"] * n}, schema=SCHEMA
    )


HALT: list[Path] = []  # ``<go>.halt``, set by main


def running(stop: float) -> bool:
    return time.time() < stop and not any(p.exists() for p in HALT)


FENCE_WAITS: list[float] = []


AWAIT_FENCES = commit_module.await_fences


def timed_await_fences(
    store: MetaStore, record: TableRecord, route: Callable[[BucketMap], dict[int, pa.Table]]
) -> tuple[BucketMap, dict[int, pa.Table]]:
    """``await_fences``, timed: how long a writer was held off fenced buckets."""
    began = time.perf_counter()
    try:
        return AWAIT_FENCES(store, record, route)
    finally:
        FENCE_WAITS.append((time.perf_counter() - began) * 1000)


def write(t: fl.LakeTable, writer: int, keys: int, stop: float, ledger: str) -> None:
    commit_module.await_fences = timed_await_fences
    with open(ledger, "w") as out:  # noqa: PTH123 - a plain ledger file
        i = 0
        while running(stop):
            is_delete, rows = batch(writer, i, keys)
            FENCE_WAITS.clear()
            began = time.perf_counter()
            token = f"w{writer}-{i}"  # a token commits even a delete of absent keys
            c = t.delete(rows, token=token) if is_delete else t.upsert(rows, token=token)
            ms = (time.perf_counter() - began) * 1000
            out.write(f"ok {i} {c.version} {ms:.1f} {max(FENCE_WAITS, default=0.0):.1f}\n")
            out.flush()
            i += 1
            time.sleep(0.05)


def compact(t: fl.LakeTable, stop: float, period: float, ledger: str) -> None:
    with open(ledger, "w") as out:  # noqa: PTH123 - a plain ledger file
        while running(stop):
            began = time.time()
            entry: dict[str, object] = {"began": began}
            try:
                c = t.compact()
                if c is not None:
                    entry.update(version=c.version, summary=dict(c.summary))
            except Exception as exc:
                entry.update(error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-1500:])
            entry["seconds"] = time.time() - began
            out.write(json.dumps(entry) + "\n")
            out.flush()
            time.sleep(max(0.0, period - (time.time() - began)))


def main() -> None:
    catalog, warehouse, mode, go, ledger = sys.argv[1:6]
    HALT.append(Path(f"{go}.halt"))
    t = fl.connect(catalog=catalog, warehouse=warehouse, principal="owner").load_table("ods.split")
    t.read()  # warm up: imports, catalog connection, file system
    Path(f"{ledger}.ready").touch()
    while not Path(go).exists():  # the test starts every process at once, however slow they start
        time.sleep(0.005)
    start, stop = map(float, Path(go).read_text().split())
    while time.time() < start:
        time.sleep(0.005)
    if mode == "write":
        write(t, int(sys.argv[6]), int(sys.argv[7]), stop, ledger)
    else:
        compact(t, stop, float(sys.argv[6]), ledger)


if __name__ == "__main__":
    main()
