"""A writer for the table-services tests (run as a script): many small commits to ``ods.svc``.

Each commit upserts 1-4 random keys of 0..999 (one in five commits deletes one instead), seeded, and
the script writes the final rows it expects (``{key: value}``) as JSON when it is done.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pyarrow as pa

import flowlake as fl


def main() -> None:
    catalog, warehouse, commits, seed, report = sys.argv[1:6]
    t = fl.connect(catalog=catalog, warehouse=warehouse, principal="owner").load_table("ods.svc")
    rng = random.Random(int(seed))
    state: dict[int, int] = {}
    for n in range(int(commits)):
        if rng.random() < 0.2 and state:
            key = rng.choice(sorted(state))
            t.delete(pa.table({"k": [key]}))
            del state[key]
            continue
        keys = sorted({rng.randrange(1000) for _ in range(rng.randint(1, 4))})
        t.upsert(pa.table({"k": keys, "v": [n] * len(keys)}, schema=t.schema))
        state.update(dict.fromkeys(keys, n))
    Path(report).write_text(json.dumps({str(k): v for k, v in state.items()}))


if __name__ == "__main__":
    main()
