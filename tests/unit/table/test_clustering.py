"""Clustering: sort_by / cluster_by properties, the order compaction writes, and what reads skip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import flowlake as fl
from flowlake.errors import InvalidArgumentError
from flowlake.table.clustering import ClusterSpec, z_values

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("at", pa.timestamp("us", tz="UTC")),
        ("shop", pa.int32()),
        ("name", pa.string()),
    ]
)
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rows(n: int, seed: int = 1, start: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    at = [EPOCH + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 100_000, n)]
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + n), pa.int64()),
            "at": pa.array(at, pa.timestamp("us", tz="UTC")),
            "shop": pa.array(rng.integers(0, 50, n), pa.int32()),
            "name": [f"n{i % 97}" for i in range(n)],
        },
        schema=SCHEMA,
    )


@pytest.fixture
def cat() -> fl.Catalog:
    return fl.connect(catalog="sqlite://", warehouse="memory://clustering-test")


def test_properties_are_validated_against_the_schema(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"])
    assert t.set_properties(sort_by="at, shop")["sort_by"] == "at, shop"
    with pytest.raises(InvalidArgumentError, match="no column 'nope' to cluster by"):
        t.set_properties(sort_by="nope")
    with pytest.raises(InvalidArgumentError, match="not both"):
        t.set_properties(cluster_by="at,shop")
    with pytest.raises(InvalidArgumentError, match="cluster_by"):
        t.set_properties(sort_by=None, cluster_by="at,shop,name,id")  # four columns
    t.set_properties(sort_by=None, cluster_by="at,shop")
    assert ClusterSpec.from_properties(t.properties) == ClusterSpec((), ("at", "shop"))
    with pytest.raises(InvalidArgumentError, match="no column 'gone' to cluster by"):
        cat.create_table("ods.u", SCHEMA, primary_key=["id"], properties={"cluster_by": "at,gone"})


def test_z_values_interleave_ranks() -> None:
    t = pa.table({"x": [0, 1, 0, 1], "y": [0, 0, 1, 1]})
    assert z_values(t, ["x", "y"]).tolist() == [0, 2, 1, 3]  # x is the more significant bit
    assert z_values(pa.table({"x": [5, None, 2]}), ["x"]).tolist() == [1, 2, 0]  # nulls rank last


@pytest.mark.parametrize("props", [{}, {"sort_by": "at"}, {"cluster_by": "shop,at"}])
def test_filtered_reads_skip_row_groups_and_stay_exact(cat: fl.Catalog, props: dict[str, str]) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=2, properties=props)
    data = rows(80_000)
    t.upsert(data)
    t.compact()
    # newer images on top of the base files: some move into the range, some out of it, some deleted
    moved = rows(3_000, seed=2).set_column(1, "at", pa.array([EPOCH] * 3_000, pa.timestamp("us", tz="UTC")))
    t.upsert(moved)
    t.delete(pa.table({"id": pa.array(np.arange(5_000, 5_500), pa.int64())}))
    lo, hi = EPOCH + dt.timedelta(seconds=20_000), EPOCH + dt.timedelta(seconds=21_000)
    filt = [("at", ">=", lo), ("at", "<", hi)]
    expected = t.read().filter((pc.field("at") >= lo) & (pc.field("at") < hi))
    got = t.read(filter=filt)
    assert sorted(got["id"].to_pylist()) == sorted(expected["id"].to_pylist())
    assert (t.last_scan.row_groups_skipped > 0) == bool(props)
    assert t.get([1, 2, 5_001, 70_000]).column("id").to_pylist() == [1, 2, 70_000]
    t.compact()  # the layout with no logs left: the same rows again
    assert sorted(t.read(filter=filt)["id"].to_pylist()) == sorted(expected["id"].to_pylist())
    at = t.read(columns=["at"])["at"]
    if props.get("sort_by"):
        for f in t.dataset().get_fragments():  # each base file is sorted by `at`
            values = f.to_table(columns=["at"])["at"]
            assert values.equals(values.sort()) or pc.all(pc.equal(values, values.sort())).as_py()
    assert at.null_count == 0


def test_dataset_filters_reach_file_and_row_group_pruning(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=2, properties={"sort_by": "shop"})
    t.upsert(rows(60_000))
    t.compact()
    t.upsert(rows(10, seed=5, start=100_000))  # one bucket gets logs: merged in memory
    dataset = t.dataset()
    expected = t.read(filter=[("shop", "=", 7)])
    assert dataset.to_table(filter=pc.field("shop") == 7).num_rows == expected.num_rows
    con = duckdb.connect()
    con.register("t", dataset)
    got = con.execute("select count(*), min(id) from t where shop = 7").fetchone()
    assert got == (expected.num_rows, pc.min(expected["id"]).as_py())
    # a file whose catalog stats cannot match is never opened: remove the files, then filter
    t.compact()
    lazy = t.dataset()
    fragments = list(lazy.get_fragments())
    assert len(fragments) >= 2
    for fragment in fragments:
        fragment.filesystem.delete_file(fragment.path)
    assert lazy.to_table(filter=pc.field("shop") > 1_000).num_rows == 0
    with pytest.raises(OSError):
        lazy.to_table(filter=pc.field("shop") == 7)


def test_cli_sets_and_unsets_the_clustering(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowlake.cli.main import app

    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    cat.create_table("ods.t", SCHEMA, primary_key=["id"])
    args = ["--catalog", f"sqlite:///{tmp_path / 'c.db'}", "--warehouse", (tmp_path / "wh").as_uri()]
    result = CliRunner().invoke(app, ["table", "set", "ods.t", "cluster_by=shop,at", *args])
    assert result.exit_code == 0, result.output
    assert cat.load_table("ods.t").properties["cluster_by"] == "shop,at"
    result = CliRunner().invoke(app, ["table", "set", "ods.t", "cluster_by=", "sort_by=missing", *args])
    assert result.exit_code != 0 and "no column 'missing'" in (result.output + str(result.exception))
    result = CliRunner().invoke(app, ["table", "set", "ods.t", "cluster_by=", *args])
    assert result.exit_code == 0 and "cluster_by" not in cat.load_table("ods.t").properties


def test_dataset_with_columns_and_filter_is_exact(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=3, properties={"sort_by": "shop"})
    t.upsert(rows(30_000))
    t.compact()
    t.upsert(rows(2_000, seed=9))  # updates: some buckets merged in memory, shops moved
    filt = [("shop", "in", [3, 4])]
    expected = t.read(columns=["id", "name"], filter=filt).sort_by("id")
    dataset = t.dataset(columns=["id", "name"], filter=filt)
    got = dataset.to_table().sort_by("id")
    assert got.select(["id", "name"]).equals(expected)
    assert set(got.column_names) == {"id", "name", "shop"}  # the columns the filter reads come along
    con = duckdb.connect()
    con.register("d", dataset)
    assert con.execute("select count(*) from d").fetchone() == (expected.num_rows,)
    everything = t.dataset(filter=pc.field("shop") == 3).to_table()
    assert everything.column_names == SCHEMA.names and set(everything["shop"].to_pylist()) == {3}
    with pytest.raises(InvalidArgumentError, match="no column"):
        t.dataset(columns=["nope"])


def test_ranks_of_large_numeric_columns_keep_order() -> None:
    """Past the sample size, numbers and times are ranked by quantile: order is kept, ties stay tied."""
    from flowlake.table.clustering import RANK_SAMPLE

    rng = np.random.default_rng(4)
    values = rng.integers(-(2**40), 2**40, RANK_SAMPLE * 3)
    for column in (
        pa.chunked_array([values]),
        pa.chunked_array([pa.array(values, pa.timestamp("us", tz="UTC"))]),
        pa.chunked_array([values.astype(np.float64)]),
    ):
        ranks = z_values(pa.table({"c": column}), ["c"])  # one column: its rank
        order = np.argsort(values, kind="stable")
        assert (np.diff(ranks[order].astype(np.int64)) >= 0).all()
        assert len(np.unique(ranks)) > RANK_SAMPLE // 2  # resolution: about one rank per sampled value
