"""String functions the planner hands to Arrow give DuckDB's results (differential, hypothesis), and
calls Arrow cannot do like DuckDB stay in the DuckDB query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

import flowlake as fl
from flowlake.sql import compile_views, plan_views
from flowlake.sql.arrowfn import ArrowCall, name_groups, take_arrow_calls
from flowlake.sql.plan import Calc, walk

TEXT = st.text(alphabet=st.sampled_from(list("ab/&=-_.xyAB(é)İẞσ\n ")), max_size=14)
STRINGS = st.lists(st.one_of(st.none(), TEXT), min_size=0, max_size=12)


def _calls(sql: str) -> tuple[exp.Expr, list[ArrowCall]]:
    tree = sqlglot.parse_one(sql, read="duckdb")
    names = iter(f"__arrow_{i}" for i in range(100))
    known: dict[tuple[Any, ...], str] = {}
    return take_arrow_calls(tree, {"s": pa.string()}, lambda c: c.name, lambda: next(names), known)


def _both(sql: str, strings: list[str | None], *, chunks: int = 2) -> tuple[list[Any], list[Any]]:
    """The call ``sql`` (over column ``s``) by DuckDB, and by its Arrow call."""
    expr, calls = _calls(sql)
    assert len(calls) == 1 and expr == exp.column(calls[0].name), f"{sql} was not taken: {expr}"
    cut = len(strings) // chunks
    column = pa.chunked_array([pa.array(strings[:cut], pa.string()), pa.array(strings[cut:], pa.string())])
    table = pa.table({"s": column})
    con = duckdb.connect()
    con.register("t", table)
    expected = con.sql(f"SELECT {sql} AS v FROM t").to_arrow_table().column("v").to_pylist()
    splits: dict[tuple[str, str], list[pa.ListArray]] = {}
    return expected, calls[0](table, splits).to_pylist()


@settings(max_examples=150, deadline=None)
@given(STRINGS, st.integers(-6, 6), st.sampled_from(["/", "--", "é", "a", "//", "\n"]))
def test_split_part_equals_duckdb(strings: list[str | None], index: int, delimiter: str) -> None:
    quoted = delimiter.replace("'", "''").replace("\n", "' || chr(10) || '")
    expected, actual = _both(f"split_part(s, '{quoted}', {index})", strings)
    assert actual == expected


PATTERNS = [
    "(&|^)channel_id=([^&]*)", "a", "b+", "(a)|(b)", "(?:a)(b)", "(?i)b(.)", "[]a](x)?", "[^/]+",
    "(a(b))", r"\(([a-z]*)\)", "[[:alpha:]]([[:digit:]]*)", "(?P<n>a)(b)?", "(?i:A)(/)", "^$", "",
    ".", "(é)", r"[\]](.)", "((?:a|b)+)(=)?", "(?s)a(.)",
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(STRINGS, st.sampled_from(PATTERNS), st.integers(0, 3), st.booleans())
def test_regexp_extract_equals_duckdb(strings: list[str | None], pattern: str, group: int, two: bool) -> None:
    named = name_groups(pattern)
    assert named is not None
    if group > len(named[1]):
        return  # DuckDB refuses a group the pattern does not have (the view's plan fails the same way)
    literal = pattern.replace("'", "''")
    sql = (
        f"regexp_extract(s, '{literal}')"
        if two and group == 0
        else f"regexp_extract(s, '{literal}', {group})"
    )
    expected, actual = _both(sql, strings)
    assert actual == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(STRINGS, st.sampled_from(["lower", "upper"]))
def test_lower_and_upper_equal_duckdb(strings: list[str | None], func: str) -> None:
    expected, actual = _both(f"{func}(s)", strings)
    assert actual == expected


def test_case_mapping_outside_ascii_is_duckdbs() -> None:
    # code points whose case Arrow's Unicode tables map differently from DuckDB's
    strings = ["\u1c89", "\ua7cb", "ƛ", "ɤ", "abc", None]
    for func in ("lower", "upper"):
        expected, actual = _both(f"{func}(s)", strings)
        assert actual == expected


@pytest.mark.parametrize(
    "sql",
    [
        "split_part(s, '', 2)",  # empty delimiter: DuckDB splits into characters
        "split_part(s, '/', length(s))",  # index not a constant
        "regexp_extract(s, 'a', 0, 'i')",  # options
        r"regexp_extract(s, '\Q(\E(a)', 1)",  # quoted text
        "lower(42)",  # not a string column
    ],
)
def test_calls_arrow_cannot_do_like_duckdb_stay_in_the_query(sql: str) -> None:
    expr, calls = _calls(sql)
    assert calls == [] and expr == sqlglot.parse_one(sql, read="duckdb")


def test_name_groups_names_only_capturing_groups() -> None:
    assert name_groups("(a)(?:b)(?i)[(](?P<x>c)\\(") == (
        "(?P<__flowlake_g1>a)(?:b)(?i)[(](?P<x>c)\\(",
        ["__flowlake_g1", "x"],
    )
    assert name_groups("[[:alpha:]](d)") == ("[[:alpha:]](?P<__flowlake_g1>d)", ["__flowlake_g1"])
    assert name_groups("(?=a)") is None  # a construct not followed: left to DuckDB
    assert name_groups("[a") is None


def test_nested_calls_and_repeats_are_computed_once(tmp_path: Path) -> None:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("url", pa.string())])
    cat.create_table("ods.hits", schema, primary_key=["id"]).upsert(
        pa.table({"id": [1, 2, 3], "url": ["http://A/b/C", None, "x"]}, schema=schema)
    )
    select = (
        "SELECT id, lower(split_part(url, '/', 3)) AS host, split_part(url, '/', 3) AS raw, "
        "upper(split_part(url, '/', 5)) || '!' AS last FROM ods.hits WHERE split_part(url, '/', 3) <> 'q'"
    )
    (view,) = plan_views(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)
    (calc,) = [n for n in walk([view.output]) if isinstance(n, Calc) and n.arrow_calls]
    assert [c.func for c in calc.arrow_calls] == ["split_part", "lower", "split_part", "upper"]
    assert calc.computed_sql is not None and "split_part" not in calc.computed_sql.lower()
    flow = Dataflow("arrow_calls")
    compile_views(f"CREATE MATERIALIZED VIEW dws.v AS {select}", flow, catalog=cat, stop="head")
    run_main(flow)  # type: ignore[no-untyped-call]
    con = duckdb.connect()
    con.register("hits", cat.load_table("ods.hits").read())
    expected = con.sql(select.replace("ods.hits", "hits")).to_arrow_table().to_pylist()
    rows = cat.load_table("dws.v").read().to_pylist()
    assert sorted(rows, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
