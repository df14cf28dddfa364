"""verify reads a view of the same dataflow as of the lineage of the view that reads it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

import flowlake as fl
from flowlake.flow.verify import as_of

SCHEMA = pa.schema([pa.field("k", pa.int64(), nullable=False), ("v", pa.int64())])


def test_as_of_picks_the_newest_commit_whose_lineage_does_not_pass_the_positions(tmp_path: Path) -> None:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    view = cat.create_table("dwd.v", SCHEMA, primary_key=["k"])
    lineages = [
        {"table:ods.a": 1},
        {"table:ods.a": 1, "table:ods.b": 1},
        {"table:ods.a": 2, "table:ods.b": 1},
        {"table:ods.a": 2, "table:ods.b": 3},
    ]
    versions = [view.upsert(pa.table({"k": [i], "v": [i]}, schema=SCHEMA), sources=s).version
                for i, s in enumerate(lineages)]  # fmt: skip
    view.compact()  # a commit without lineage changes nothing lineage describes
    assert as_of(view, {"ods.a": 2, "ods.b": 2}) == versions[2]
    assert as_of(view, {"ods.a": 2, "ods.b": 3}) == versions[3]
    # ods.b not read yet (version 0): only the commit that had not read it either qualifies
    assert as_of(view, {"ods.a": 1}) == versions[0]
    assert as_of(view, {"ods.a": 0}) is None
