"""A writer process for the multi-process concurrency tests (run as a script).

Each commit is ledgered as ``ok <i> <version> <ms>`` (``<ms>``: how long the write call took) or
``conflict <i>``.
"""

from __future__ import annotations

import sys
import time

import pyarrow as pa

import flowlake as fl

SCHEMA = pa.schema(
    [("k", pa.int64()), ("writer", pa.int64()), ("seq", pa.int64()), ("a", pa.int64()), ("b", pa.int64())]
)


def main() -> None:
    catalog, warehouse, mode, writer, commits, ledger = sys.argv[1:7]
    w, n = int(writer), int(commits)
    cat = fl.connect(catalog=catalog, warehouse=warehouse, principal="owner")
    t = cat.load_table("ods.occ")
    with open(ledger, "w") as out:  # noqa: PTH123 - a plain ledger file
        for i in range(n):
            started = time.perf_counter()
            try:
                if mode == "disjoint":
                    keys = [w * 100_000 + i * 10 + j for j in range(10)]
                    batch = pa.table(
                        {"k": keys, "writer": [w] * 10, "seq": [i] * 10, "a": [i] * 10, "b": [0] * 10},
                        schema=SCHEMA,
                    )
                    c = t.upsert(batch, token=f"w{w}-{i}")
                elif mode == "overlap":
                    keys = [(i + w) % 7, (i * 3 + w) % 7]
                    batch = pa.table(
                        {"k": keys, "writer": [w] * 2, "seq": [i] * 2, "a": [w * 1000 + i] * 2, "b": [0] * 2},
                        schema=SCHEMA,
                    )
                    c = t.upsert(batch, token=f"w{w}-{i}", on_conflict="fail")
                else:  # columns: writer 0 owns column a, writer 1 owns column b, same rows
                    column = "a" if w == 0 else "b"
                    batch = pa.table({"k": list(range(20)), column: [i] * 20})
                    c = t.update_columns(batch, token=f"w{w}-{i}", on_conflict="merge-columns")
                out.write(f"ok {i} {c.version} {(time.perf_counter() - started) * 1000:.0f}\n")
            except fl.CommitConflictError:
                out.write(f"conflict {i}\n")
            out.flush()


if __name__ == "__main__":
    main()
