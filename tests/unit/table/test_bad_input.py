"""Every kind of bad input gets its own FlowlakeError with a message that says what to do."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from _builders import order, orders_table
from conftest import ORDERS

import flowlake as fl


@pytest.mark.parametrize(
    "name", ["orders", "ods.Orders", "../etc.passwd", "ods.or-ders", "a.b.c", "ods.", "1ods.x"]
)
def test_bad_table_names_are_refused(catalog: fl.Catalog, name: str) -> None:
    with pytest.raises(fl.InvalidNameError, match=r"invalid (table name|namespace)"):
        catalog.create_table(name, ORDERS, primary_key=["order_id"])


def test_unknown_table(catalog: fl.Catalog) -> None:
    with pytest.raises(fl.TableNotFoundError, match=r"'ods.nope' does not exist.*create_table"):
        catalog.load_table("ods.nope")


def test_table_exists(catalog: fl.Catalog, orders: fl.LakeTable) -> None:
    with pytest.raises(fl.TableExistsError, match=r"already exists"):
        catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    assert (
        catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], exist_ok=True).name
        == "ods.orders"
    )


def test_key_column_must_exist_and_be_keyable(catalog: fl.Catalog) -> None:
    with pytest.raises(fl.SchemaMismatchError, match=r"'nope'.*not in the schema"):
        catalog.create_table("ods.a", ORDERS, primary_key=["nope"])
    with pytest.raises(fl.SchemaMismatchError, match=r"'paid'.*cannot be a primary key"):
        catalog.create_table("ods.b", ORDERS, primary_key=["paid"])
    with pytest.raises(fl.InvalidArgumentError, match=r"at least one column"):
        catalog.create_table("ods.c", ORDERS, primary_key=[])


def test_reserved_and_invalid_column_names(catalog: fl.Catalog) -> None:
    with pytest.raises(fl.InvalidNameError, match=r"reserved"):
        catalog.create_table(
            "ods.a", pa.schema([("id", pa.int64()), ("_kind", pa.int8())]), primary_key=["id"]
        )
    with pytest.raises(fl.InvalidNameError, match=r"invalid column name"):
        catalog.create_table("ods.b", pa.schema([("id", pa.int64()), ("a b", pa.int8())]), primary_key=["id"])


def test_unsupported_type(catalog: fl.Catalog) -> None:
    schema = pa.schema([("id", pa.int64()), ("tags", pa.list_(pa.string()))])
    with pytest.raises(fl.SchemaMismatchError, match=r"'tags'.*not supported"):
        catalog.create_table("ods.a", schema, primary_key=["id"])


def test_null_key_names_column_and_row(orders: fl.LakeTable) -> None:
    batch = orders_table([order(1), order(2)]).set_column(0, "order_id", pa.array([1, None], pa.int64()))
    with pytest.raises(fl.NullKeyError, match=r"'order_id' is null at row 1"):
        orders.upsert(batch)
    assert orders.version == 0


def test_missing_extra_and_wrong_typed_columns(orders: fl.LakeTable) -> None:
    good = orders_table([order(1)])
    with pytest.raises(fl.SchemaMismatchError, match=r"'qty'.*lacks this column"):
        orders.upsert(good.drop_columns(["qty"]))
    with pytest.raises(fl.SchemaMismatchError, match=r"'extra'.*does not"):
        orders.upsert(good.append_column("extra", pa.array([1])))
    with pytest.raises(fl.SchemaMismatchError, match=r"'shop'.*batch has type int64"):
        orders.upsert(good.set_column(1, "shop", pa.array([5])))
    with pytest.raises(
        fl.SchemaMismatchError, match=r"'qty': row 0 of the batch \(key order_id=1\) holds 1099"
    ):
        orders.upsert(good.set_column(3, "qty", pa.array([2**40], pa.int64())))
    with pytest.raises(fl.SchemaMismatchError, match=r"expected a pyarrow Table"):
        orders.upsert([{"order_id": 1}])
    assert orders.version == 0  # nothing was committed


def test_narrower_input_types_are_widened(orders: fl.LakeTable) -> None:
    batch = orders_table([order(1)])
    batch = batch.set_column(0, "order_id", pa.array([1], pa.int32())).set_column(
        3, "qty", pa.array([3], pa.int8())
    )
    orders.upsert(batch)
    assert orders.read()["qty"].to_pylist() == [3]


def test_bad_changelog_kinds(orders: fl.LakeTable) -> None:
    rows = orders_table([order(1)])
    with pytest.raises(fl.InvalidChangelogError, match=r"needs a '_kind' column"):
        orders.apply(rows)
    with pytest.raises(fl.InvalidChangelogError, match=r"row 0 has _kind=7"):
        orders.apply(rows.append_column("_kind", pa.array([7], pa.int8())))
    with pytest.raises(fl.InvalidChangelogError, match=r"non-null integer"):
        orders.apply(rows.append_column("_kind", pa.array(["+I"])))


def test_bad_versions(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1)]))
    with pytest.raises(fl.VersionNotFoundError, match=r"no version 5; versions run from 0 to 1"):
        orders.read(version=5)
    with pytest.raises(fl.VersionNotFoundError, match=r"start <= end"):
        orders.changes(1, 0)
    with pytest.raises(fl.InvalidArgumentError, match=r"either version= or as_of="):
        orders.read(version=1, as_of=0)
    with pytest.raises(fl.InvalidArgumentError, match=r"no column"):
        orders.read(columns=["nope"])
    with pytest.raises(fl.InvalidArgumentError, match=r"retain_last"):
        orders.clean(retain_last=0)


def test_bad_filters(orders: fl.LakeTable) -> None:
    with pytest.raises(fl.InvalidArgumentError, match=r"bad filter predicate"):
        orders.read(filter=[("qty", "~", 1)])
    with pytest.raises(fl.InvalidArgumentError, match=r"filter must be"):
        orders.read(filter=["qty > 1"])


def test_filters_take_literals_of_any_comparable_type_and_name_bad_ones(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1, amount="50.00"), order(2, amount="150.00")]))
    assert orders.read(filter=[("amount", ">", 100)], columns=["order_id"]).to_pylist() == [{"order_id": 2}]
    assert orders.read(filter=[("amount", "<", "60")], columns=["order_id"]).to_pylist() == [{"order_id": 1}]
    assert orders.read(filter=[("amount", "in", [50, 150.0])]).num_rows == 2
    assert orders.read(filter=[("created_at", ">", "2000-01-01T00:00:00Z")]).num_rows == 2
    with pytest.raises(fl.InvalidArgumentError, match=r"column 'nope', which it does not have"):
        orders.read(filter=[("nope", ">", 1)])
    with pytest.raises(fl.InvalidArgumentError, match=r"'abc' cannot compare with column 'amount'"):
        orders.read(filter=[("amount", ">", "abc")])
    with pytest.raises(fl.InvalidArgumentError, match=r"cannot be applied"):
        orders.read(filter=[("shop", ">", 3)])


def test_time_filters_take_naive_times_as_utc_like_as_of(orders: fl.LakeTable) -> None:
    """A naive datetime or offset-free text on a column with a time zone was an ArrowInvalid."""
    orders.upsert(orders_table([order(1), order(2)]))
    created = orders.read()["created_at"].to_pylist()[0]
    before = created.replace(tzinfo=None) - dt.timedelta(seconds=1)
    for value in (before, before.isoformat(), before.date().isoformat(), before.replace(tzinfo=dt.UTC)):
        assert orders.read(filter=[("created_at", ">", value)]).num_rows == 2, value
        assert orders.read(filter=[("created_at", "<", value)]).num_rows == 0, value
        assert orders.dataset(filter=[("created_at", ">", value)]).to_table().num_rows == 2, value
    later = created.replace(tzinfo=None) + dt.timedelta(days=1)
    assert orders.read(filter=[("created_at", "in", [later, created])]).num_rows == 1
    with pytest.raises(fl.InvalidArgumentError, match=r"'yesterday' cannot compare with column 'created_at'"):
        orders.read(filter=[("created_at", ">", "yesterday")])


def test_an_aware_time_does_not_compare_with_a_naive_column(catalog: fl.Catalog) -> None:
    schema = pa.schema([("id", pa.int64()), ("at", pa.timestamp("ms"))])
    table = catalog.create_table("ods.naive", schema, primary_key=["id"])
    table.upsert(pa.table({"id": [1], "at": [dt.datetime(2026, 1, 1, 12)]}, schema=schema))
    assert table.read(filter=[("at", ">", "2026-01-01T11:00:00")]).num_rows == 1
    assert table.read(filter=[("at", ">", dt.datetime(2026, 1, 1, 13))]).num_rows == 0
    with pytest.raises(fl.InvalidArgumentError, match=r"has a time zone but column 'at'"):
        table.read(filter=[("at", ">", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))])


def test_as_of_takes_text_and_says_when_it_is_before_or_after_the_history(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1)]))
    assert orders.read(as_of=dt.datetime.now(dt.UTC).isoformat()).num_rows == 1
    with pytest.raises(fl.VersionNotFoundError, match=r"at or before 2020-01-01T00:00:00\+00:00"):
        orders.read(as_of="2020-01-01")
    with pytest.raises(fl.VersionNotFoundError, match=r"is in the future"):
        orders.read(as_of=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    with pytest.raises(fl.InvalidArgumentError, match=r"'yesterday' is not a time"):
        orders.read(as_of="yesterday")


def test_a_write_that_changes_nothing_says_so(orders: fl.LakeTable) -> None:
    first = orders.upsert(orders_table([order(1)]))
    for nothing in (
        orders.upsert(orders_table([])),
        orders.delete(pa.table({"order_id": [99]})),
        orders.upsert(orders_table([order(1)])),  # the same row again
    ):
        assert (nothing.version, nothing.operation) == (first.version, "none")
        assert nothing.summary["rows"] == {"+I": 0, "-U": 0, "+U": 0, "-D": 0}
        assert "nothing changed" in nothing.summary["note"]
    assert orders.refresh().version == first.version


def test_schema_evolution_rules(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1)]))
    wider = pa.schema([f.with_type(pa.int64()) if f.name == "qty" else f for f in ORDERS]).append(
        pa.field("note", pa.string())
    )
    commit = orders.evolve_schema(wider)
    assert commit.operation == "schema"
    assert orders.schema.field("qty").type == pa.int64()
    row = orders.read().to_pylist()[0]
    assert row["note"] is None and row["qty"] == 1
    with pytest.raises(fl.SchemaMismatchError, match=r"'shop'.*cannot change"):
        orders.evolve_schema(
            pa.schema([f.with_type(pa.int64()) if f.name == "shop" else f for f in orders.schema])
        )
    with pytest.raises(fl.SchemaMismatchError, match=r"'note'.*cannot be dropped"):
        orders.evolve_schema(pa.schema([f for f in orders.schema if f.name != "note"]))
    with pytest.raises(fl.SchemaMismatchError, match=r"'must'.*must be nullable"):
        orders.evolve_schema(orders.schema.append(pa.field("must", pa.int8(), nullable=False)))
    with pytest.raises(fl.SchemaMismatchError, match=r"'qty'.*cannot change"):
        orders.evolve_schema(
            pa.schema([f.with_type(pa.int16()) if f.name == "qty" else f for f in orders.schema])
        )
    orders.upsert(pa.Table.from_pylist([{**order(2), "note": "hi"}], schema=orders.schema))
    assert sorted(orders.read()["note"].to_pylist(), key=str) == [None, "hi"]
    assert orders.changes(0).num_rows == 2  # changes across the evolution use the newest schema


# --- one test per kind of bad value: the error names the table, the column, the row and its key -----------

ROW1 = r"row 1 of the batch \(key order_id=2\)"


def two_orders(column: str, array: pa.Array) -> pa.Table:
    """Orders 1 and 2 with ``column`` replaced (its row 1 holds the bad value)."""
    table = orders_table([order(1), order(2)])
    return table.set_column(table.schema.get_field_index(column), column, array)


def test_wrong_schema_names_table_column_and_types(orders: fl.LakeTable) -> None:
    naive = pa.array([dt.datetime(2026, 1, 1)] * 2, pa.timestamp("us"))
    with pytest.raises(
        fl.SchemaMismatchError, match=r"'ods.orders', column 'created_at': batch has type timestamp\[us\]"
    ):
        orders.upsert(two_orders("created_at", naive))
    with pytest.raises(
        fl.SchemaMismatchError, match=r"column 'amount': batch has type double, the table stores"
    ):
        orders.upsert(two_orders("amount", pa.array([1.5, 2.5])))
    assert orders.version == 0


def test_null_key_in_delete_and_update_columns(orders: fl.LakeTable) -> None:
    keys = pa.table({"order_id": pa.array([1, None], pa.int64())})
    with pytest.raises(
        fl.NullKeyError, match=r"'ods.orders': primary-key column 'order_id' is null at row 1"
    ):
        orders.delete(keys)
    with pytest.raises(fl.NullKeyError, match=r"'order_id' is null at row 1"):
        orders.update_columns(keys.append_column("qty", pa.array([1, 2], pa.int32())))
    assert orders.version == 0


def test_huge_values(orders: fl.LakeTable) -> None:
    with pytest.raises(
        fl.SchemaMismatchError, match=r"'order_id': row 1 of the batch holds 9223372036854775808, "
    ):
        orders.upsert(two_orders("order_id", pa.array([1, 2**63], pa.uint64())))
    with pytest.raises(
        fl.SchemaMismatchError, match=rf"'qty': {ROW1} holds -2147483649, which does not fit int32"
    ):
        orders.upsert(two_orders("qty", pa.array([1, -(2**31) - 1], pa.int64())))
    assert orders.version == 0
    huge = "\U0001f600" * 1_000_000  # a huge string is a legal value
    orders.upsert(two_orders("shop", pa.array(["s", huge])))
    assert orders.read(filter=[("order_id", "=", 2)])["shop"].to_pylist() == [huge]


def test_unicode_is_kept_and_invalid_utf8_is_refused(orders: fl.LakeTable) -> None:
    text = "A\u0301 \U0001f600 \u05d0\u05d1 \u0000 \ufeff"
    orders.upsert(two_orders("shop", pa.array([text, "\u6771\u4eac"])))
    assert sorted(orders.read()["shop"].to_pylist()) == sorted([text, "\u6771\u4eac"])
    raw = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.array([0, 1, 3], pa.int32()).buffers()[1], pa.py_buffer(b"a\xed\xa0")]
    )  # row 1 holds an unpaired surrogate's bytes, which Arrow builds without checking
    with pytest.raises(fl.SchemaMismatchError, match=rf"'shop': {ROW1} is not valid UTF-8; store raw bytes"):
        orders.upsert(two_orders("shop", raw))
    assert orders.version == 1


def test_nan_is_a_float_value_but_never_a_key(catalog: fl.Catalog) -> None:
    schema = pa.schema([("id", pa.int64()), ("ratio", pa.float64())])
    table = catalog.create_table("ods.ratios", schema, primary_key=["id"])
    table.upsert(pa.table({"id": [1, 2], "ratio": [math.nan, math.inf]}, schema=schema))
    assert table.upsert(pa.table({"id": [1], "ratio": [math.nan]}, schema=schema)).version == 1  # NaN = NaN
    assert [math.isnan(v) for v in table.read().sort_by("id")["ratio"].to_pylist()] == [True, False]
    with pytest.raises(
        fl.SchemaMismatchError, match=r"'id': row 1 of the batch holds nan, which does not fit int64"
    ):
        table.upsert(pa.table({"id": [3.0, math.nan], "ratio": [0.5, 0.5]}))
    with pytest.raises(fl.SchemaMismatchError, match=r"'ratio': type double cannot be a primary key"):
        catalog.create_table("ods.nan_keys", schema, primary_key=["ratio"])
    assert table.version == 1


def test_decimal_out_of_range(orders: fl.LakeTable) -> None:
    wide = pa.array([Decimal("1.00"), Decimal("12345678901.00")], pa.decimal128(38, 2))
    with pytest.raises(
        fl.SchemaMismatchError,
        match=rf"'amount': {ROW1} holds Decimal\('12345678901.00'\), which does not fit decimal128\(12, 2\)",
    ):
        orders.upsert(two_orders("amount", wide))
    finer = pa.array([Decimal("1.000"), Decimal("1.005")], pa.decimal128(12, 3))
    with pytest.raises(
        fl.SchemaMismatchError, match=rf"'amount': {ROW1} holds Decimal\('1.005'\), which does not fit"
    ):
        orders.upsert(two_orders("amount", finer))
    assert orders.version == 0


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (
            pa.array([0, 253_402_300_800_000_000], pa.int64()),
            r"holds 253402300800000000 us since the epoch, outside the years 1-9999",
        ),
        (
            pa.array([0, -62_135_596_800_000_001], pa.int64()),
            r"holds -62135596800000001 us since the epoch, outside the years",
        ),
        (
            pa.array([0, 2**62], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            r"holds 4611686018427387904 s since the epoch, which does not fit timestamp\[us, tz=UTC\]",
        ),
        (
            pa.array([0, 1001], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            r"holds .*, which does not fit timestamp\[us, tz=UTC\] \(.*would lose data",
        ),
    ],
)
def test_timestamp_out_of_range(orders: fl.LakeTable, array: pa.Array, pattern: str) -> None:
    if array.type == pa.int64():
        array = array.cast(pa.timestamp("us", tz="UTC"))
    with pytest.raises(fl.SchemaMismatchError, match=rf"'ods.orders', column 'created_at': {ROW1} {pattern}"):
        orders.upsert(two_orders("created_at", array))
    assert orders.version == 0


def test_date_out_of_range(catalog: fl.Catalog) -> None:
    schema = pa.schema([("id", pa.int64()), ("day", pa.date32())])
    table = catalog.create_table("ods.days", schema, primary_key=["id"])
    days = pa.array([0, 2**31 - 1], pa.int32()).cast(pa.date32())
    with pytest.raises(
        fl.SchemaMismatchError,
        match=r"'day': row 1 of the batch \(key id=2\) holds 2147483647 days since 1970-01-01, "
        r"outside the years 1-9999",
    ):
        table.upsert(pa.table({"id": [1, 2], "day": days}))
    assert table.version == 0


def test_dataset_reads_compacted_buckets_lazily_and_equals_the_snapshot(orders: fl.LakeTable) -> None:
    import pyarrow.dataset as ds

    orders.upsert(orders_table([order(i) for i in range(40)]))
    orders.compact()
    assert isinstance(orders.dataset(), ds.FileSystemDataset)  # nothing in memory
    orders.upsert(orders_table([order(1, amount="99.00"), order(100)]))
    orders.delete(pa.table({"order_id": [2]}))
    lazy = orders.dataset()
    key = [("order_id", "ascending")]
    assert lazy.to_table().sort_by(key).to_pylist() == orders.read().sort_by(key).to_pylist()


def test_dataset_merges_a_bucket_with_logs_only_when_a_scan_reaches_it(
    orders: fl.LakeTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dataset() merged every bucket with log files in memory at once: the whole table, for a table
    written since its last compaction. Now each such bucket is merged as a scan reaches it."""
    import duckdb

    from flowlake.table import scan

    orders.upsert(orders_table([order(i) for i in range(40)]))
    orders.compact()
    orders.upsert(orders_table([order(i, amount="7.00") for i in range(0, 40, 3)]))  # logs everywhere
    orders.delete(pa.table({"order_id": [4, 5]}))
    merges: list[set[int]] = []
    real = scan.read_snapshot

    def spy(storage: Any, files: Any, *args: Any, **kwargs: Any) -> pa.Table:
        merges.append({f.bucket for f in files})
        return real(storage, files, *args, **kwargs)

    monkeypatch.setattr(scan, "read_snapshot", spy)
    lazy = orders.dataset()
    assert merges == []  # nothing read yet
    expected = orders.read().sort_by("order_id").to_pylist()
    merges.clear()
    assert lazy.to_table().sort_by("order_id").to_pylist() == expected
    assert sorted(b for m in merges for b in m) == list(range(orders.buckets))  # one merge per bucket
    assert all(len(m) == 1 for m in merges)
    con = duckdb.connect()
    con.register("o", lazy)  # DuckDB scans it once per reference: a self join scans it twice
    joined = con.execute("select count(*) from o a join o b using (order_id)").fetchone()
    assert joined == (len(expected),)
    narrow = orders.dataset(columns=["amount"], filter=[("order_id", "in", [3, 4])])
    assert narrow.to_table().to_pylist() == [{"amount": Decimal("7.00"), "order_id": 3}]


def test_a_bucket_that_cannot_be_merged_fails_the_duckdb_scan_without_hanging(tmp_path: Path) -> None:
    """A Python exception out of the merge deadlocked DuckDB's scan; it must fail, naming the bucket."""
    script = """
import os, sys, duckdb, pyarrow as pa, flowlake as fl
cat = fl.connect(catalog=sys.argv[1], warehouse=sys.argv[2], principal="p")
schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
t = cat.create_table("ods.t", schema, primary_key=["id"], buckets=2)
t.upsert(pa.table({"id": [1, 2, 3, 4], "v": list("abcd")}, schema=schema))
lazy = t.dataset()
for root, _, names in os.walk(sys.argv[3]):
    for name in names:
        os.remove(os.path.join(root, name))
con = duckdb.connect()
con.register("x", lazy)
for _ in range(3):
    try:
        con.execute("select * from x").fetchall()
    except duckdb.Error as exc:
        print("scan failed:", exc)
"""
    warehouse = tmp_path / "wh"
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'c.db'}", warehouse.as_uri(), str(warehouse)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("scan failed:") == 3 and "ods/t/data/bucket-" in done.stdout, done.stdout
    assert "could not merge ods/t/data/bucket-" in done.stderr and "is missing" in done.stderr
