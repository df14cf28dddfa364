"""SQL WHERE on a primary key reaches the table's dataset as a key filter, only when that is exact."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.query import run_sql
from flowlake.sql.keyfilter import key_filters
from flowlake.table.table import LakeTable

SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.string()), ("n", pa.int64())])
ONE = {"ods.t": (["id"], SCHEMA)}
TWO = {"ods.t": (["id", "day"], SCHEMA)}


@pytest.mark.parametrize(
    ("sql", "keys", "expected"),
    [
        ("select * from ods.t where id = 5", ONE, [("id", "in", [5])]),
        ("select n from ods.t x where x.id in (1, -2) and n > 0", ONE, [("id", "in", [1, -2])]),
        (
            "select count(*) from ods.t where (id in (1, 2, 3) and id in (2, 3, 4))",
            ONE,
            [("id", "in", [2, 3])],
        ),
        ("select * from ods.t where 7 = id", ONE, [("id", "in", [7])]),
        (
            "select * from ods.t where id = 5 and day = 'mon'",
            TWO,
            [("id", "in", [5]), ("day", "in", ["mon"])],
        ),
    ],
)
def test_pinned_keys_are_pushed(sql: str, keys: Any, expected: list[Any]) -> None:
    assert key_filters(sql, keys) == {"ods.t": expected}


@pytest.mark.parametrize(
    "sql",
    [
        "select * from ods.t where id = 5 or n = 1",  # not a top-level AND term
        "select * from ods.t where id > 5",
        "select * from ods.t where id = '5'",  # DuckDB casts the text; leave it to DuckDB
        "select * from ods.t where id = 5.0",
        "select * from ods.t where id = 99999999999999999999",  # beyond int64: DuckDB's to answer
        "select * from ods.t where id in (select id from ods.t where n = 1)",  # the table twice
        "select * from ods.t a join ods.t b using (id) where a.id = 5",
        "select * from ods.t where id = 5 union all select * from ods.t where id = 6",
        "select * from (select * from ods.t) s where id = 5",  # not the outer select's own source
        "select * from ods.t where other.id = 5",
        "select * from ods.t where day = 'mon'",
        "select * from ods.t where",  # does not parse
    ],
)
def test_anything_else_is_left_to_duckdb(sql: str) -> None:
    assert key_filters(sql, ONE) == {}


def test_a_composite_key_needs_every_column() -> None:
    assert key_filters("select * from ods.t where id = 5", TWO) == {}


def test_sql_on_the_key_reads_only_its_buckets_and_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://sqlkey-{uuid.uuid4().hex}")
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=8)
    ids = list(range(200))
    t.upsert(pa.table({"id": ids, "day": ["mon"] * 200, "n": ids}, schema=SCHEMA))
    t.compact()
    t.upsert(pa.table({"id": [5, 300], "day": ["tue", "wed"], "n": [50, 3]}, schema=SCHEMA))
    seen: list[Any] = []
    original = LakeTable.dataset

    def spy(self: LakeTable, version: int | None = None, **kwargs: Any) -> Any:
        seen.append(kwargs.get("filter"))
        return original(self, version, **kwargs)

    monkeypatch.setattr(LakeTable, "dataset", spy)
    got = run_sql(cat, "select id, day, n from ods.t where id in (5, 7, 300) order by id")
    assert got.to_pylist() == [
        {"id": 5, "day": "tue", "n": 50},
        {"id": 7, "day": "mon", "n": 7},
        {"id": 300, "day": "wed", "n": 3},
    ]
    assert seen == [[("id", "in", [5, 7, 300])]]
    assert run_sql(cat, "select count(*) as c from ods.t where n >= 100").to_pylist() == [{"c": 100}]
    assert seen[-1] is None
    assert run_sql(cat, "select count(*) as c from ods.t where id = -3").to_pylist() == [{"c": 0}]
    assert seen[-1] == [("id", "in", [-3])]
