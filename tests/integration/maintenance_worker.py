"""A maintenance process for the concurrency tests (run as a script): loops ``compact()`` or
``clean()`` on ``ods.occ`` until a stop file appears, then writes what it did as JSON."""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import flowlake as fl


def main() -> None:
    catalog, warehouse, mode, stop, report = sys.argv[1:6]
    retain_last, grace = int(sys.argv[6]), float(sys.argv[7])
    t = fl.connect(catalog=catalog, warehouse=warehouse, principal="owner").load_table("ods.occ")
    done: dict[str, Any] = {"runs": 0, "commits": 0, "files_deleted": 0, "orphans_deleted": 0}
    done.update({"held_back": 0, "errors": []})
    while not Path(stop).exists():
        try:
            if mode == "compact":
                done["commits"] += t.compact() is not None
                time.sleep(0.1)
            else:
                result = t.clean(retain_last=retain_last, orphan_grace_seconds=grace)
                done["files_deleted"] += result.files_deleted
                done["orphans_deleted"] += result.orphans_deleted
                # a pin (or a consumer) kept versions older than the retained ones
                done["held_back"] += result.oldest_version < t.version - retain_last + 1
                time.sleep(0.05)
            done["runs"] += 1
        except Exception:
            done["errors"].append(traceback.format_exc()[-2000:])
    Path(report).write_text(json.dumps(done))


if __name__ == "__main__":
    main()
