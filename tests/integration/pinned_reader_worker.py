"""A reader process for the concurrency tests (run as a script): pins the head of ``ods.occ``, reads
the pinned version several times over about a second while writers, compaction and cleaning run,
releases the pin, and again, until a stop file appears; then writes every pinned read as JSON."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pyarrow as pa

import flowlake as fl

COLUMNS = ["k", "writer", "seq", "a", "b"]


def digest(rows: pa.Table) -> str:
    """An order-independent checksum of a snapshot's rows."""
    ordered = rows.select(COLUMNS).sort_by("k")
    return hashlib.sha256(repr([ordered[c].to_pylist() for c in COLUMNS]).encode()).hexdigest()


def main() -> None:
    catalog, warehouse, stop, report = sys.argv[1:5]
    reads, interval = int(sys.argv[5]), float(sys.argv[6])
    t = fl.connect(catalog=catalog, warehouse=warehouse, principal="owner").load_table("ods.occ")
    pins: list[dict[str, Any]] = []
    errors: list[str] = []
    while not Path(stop).exists():
        try:
            with t.pin() as pin:
                first = digest(pin.read())
                same = 1
                for n in range(reads - 1):
                    time.sleep(interval)
                    # through the pin and through read(version=): the same rows each time
                    again = pin.read() if n % 2 else t.read(version=pin.version)
                    same += digest(again) == first
                lag = t.refresh().version - pin.version
                oldest = t.oldest_version
            pins.append(
                {"version": pin.version, "digest": first, "reads": reads, "same": same, "lag": lag,
                 "oldest_at_end": oldest}
            )  # fmt: skip
        except Exception:
            errors.append(traceback.format_exc()[-2000:])
    Path(report).write_text(json.dumps({"pins": pins, "errors": errors}))


if __name__ == "__main__":
    main()
