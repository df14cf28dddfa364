"""SQL WHERE terms reach the table's dataset as a filter (a key filter prunes buckets), only when exact."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.query import run_sql
from flowlake.sql.keyfilter import pushed_filters
from flowlake.table.table import LakeTable

SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.string()), ("n", pa.int64())])
TABLES = {"ods.t": SCHEMA}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select * from ods.t where id = 5", [("id", "=", 5)]),
        ("select n from ods.t x where x.id in (1, -2) and n > 0", [("id", "in", [1, -2]), ("n", ">", 0)]),
        (
            "select count(*) from ods.t where (id in (1, 2) and (id in (2, 3)))",
            [("id", "in", [1, 2]), ("id", "in", [2, 3])],
        ),
        (
            "select * from ods.t where 7 = id and 3 < n and n <= 9",
            [("id", "=", 7), ("n", ">", 3), ("n", "<=", 9)],
        ),
        ("select * from ods.t where id = 5 and day = 'mon'", [("id", "=", 5), ("day", "=", "mon")]),
        ("select * from ods.t where (id = 5 or n = 1) and day in ('a', 'b')", [("day", "in", ["a", "b"])]),
    ],
)
def test_simple_terms_are_pushed(sql: str, expected: list[Any]) -> None:
    assert pushed_filters(sql, TABLES) == {"ods.t": expected}


@pytest.mark.parametrize(
    "sql",
    [
        "select * from ods.t where id = 5 or n = 1",  # not a top-level AND term
        "select * from ods.t where id != 5",
        "select * from ods.t where day > 'mon'",  # text ordering: left to DuckDB
        "select * from ods.t where id = '5'",  # DuckDB casts the text; leave it to DuckDB
        "select * from ods.t where id = 5.0",
        "select * from ods.t where id = 99999999999999999999",  # beyond int64: DuckDB's to answer
        "select * from ods.t where id in (select id from ods.t where n = 1)",  # the table twice
        "select * from ods.t a join ods.t b using (id) where a.id = 5",
        "select * from ods.t where id = 5 union all select * from ods.t where id = 6",
        "select * from (select * from ods.t) s where id = 5",  # not the outer select's own source
        "select * from ods.t where other.id = 5",
        "select * from ods.t where id = n",
        "select * from ods.t",
        "select * from ods.t where",  # does not parse
    ],
)
def test_anything_else_is_left_to_duckdb(sql: str) -> None:
    assert pushed_filters(sql, TABLES) == {}


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
    assert seen[-1] == [("n", ">=", 100)]
    assert run_sql(cat, "select count(*) as c from ods.t where id = -3").to_pylist() == [{"c": 0}]
    assert seen[-1] == [("id", "=", -3)]
    assert run_sql(cat, "select count(*) as c from ods.t where day <> 'x'").to_pylist() == [{"c": 201}]
    assert seen[-1] is None


@pytest.mark.parametrize(
    "where",
    [
        "id = 5",
        "id in (5, 7, 300, 1000)",
        "n >= 100 and n < 150",
        "3 < n and day in ('mon', 'wed')",
        "day = 'tue' and id in (5, 6)",
        "id = 5 and n = 49",
        "n > 9000000000",
        "-1 >= id",
    ],
)
def test_pushed_filters_answer_as_duckdb_does_over_the_snapshot(where: str) -> None:
    """Against DuckDB over the table's rows as one Arrow table: buckets with log files, deletes."""
    import duckdb

    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://sqldiff-{uuid.uuid4().hex}")
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=4)
    ids = list(range(300))
    t.upsert(pa.table({"id": ids, "day": ["mon", "tue", "wed"] * 100, "n": ids}, schema=SCHEMA))
    t.compact()
    t.upsert(pa.table({"id": [5, 300, 120], "day": ["tue", "wed", None], "n": [49, 3, None]}, schema=SCHEMA))
    t.delete(pa.table({"id": [7, 130]}))
    query = f"select id, day, n from ods.t where {where} order by id"
    got = run_sql(cat, query).to_pylist()
    con = duckdb.connect()
    con.register("snapshot", t.read())
    relation = con.sql(query.replace("ods.t", "snapshot"))
    assert relation is not None
    assert got == relation.to_arrow_table().to_pylist()
    con.close()
