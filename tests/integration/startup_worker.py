"""One process of a cluster that starts at once (run as a script by test_catalog_startup_race.py).

The worker imports flowlake once, then serves trials from stdin, one JSON object per line::

    {"catalog": URL, "warehouse": URL, "namespace": "ns", "worker": 3, "token": ""}

For each trial it answers ``ready`` and blocks until the parent sends ``go`` (to every worker at
once), then does what a freshly started pipeline process does: open the catalog (a fresh one: the
first open creates and migrates it), create its own table and a table every worker shares, both
with ``exist_ok=True``, and commit one row to its own table. It answers one JSON line:
``{"ok": true}`` or ``{"ok": false, "error": "<class>: <message>", "seconds": ...}``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

import pyarrow as pa

import flowlake as fl

SCHEMA = pa.schema([("k", pa.int64()), ("worker", pa.int64())])


def run_trial(spec: dict[str, object]) -> None:
    """Open the catalog, create the tables, commit one row (raises whatever flowlake raises)."""
    worker = int(str(spec["worker"]))
    namespace = str(spec["namespace"])
    token = str(spec.get("token") or "") or None
    cat = fl.connect(
        catalog=str(spec["catalog"]), warehouse=str(spec["warehouse"]), principal="owner", token=token
    )
    own = cat.create_table(f"{namespace}.t{worker}", SCHEMA, primary_key=["k"], buckets=1, exist_ok=True)
    cat.create_table(f"{namespace}.shared", SCHEMA, primary_key=["k"], buckets=1, exist_ok=True)
    own.upsert(pa.table({"k": [worker], "worker": [worker]}, schema=SCHEMA))


def main() -> None:
    """Serve trials until stdin closes."""
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        started = time.perf_counter()
        try:
            run_trial(spec)
            answer: dict[str, object] = {"ok": True}
        except Exception as exc:  # report every failure to the parent, which fails the test
            answer = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(limit=6),
            }
        answer["seconds"] = round(time.perf_counter() - started, 3)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
