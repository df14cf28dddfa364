"""Every kind of bad input gets its own FlowlakeError with a message that says what to do."""

from __future__ import annotations

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
    with pytest.raises(fl.SchemaMismatchError, match=r"'qty'.*do not fit"):
        orders.upsert(good.set_column(3, "qty", pa.array([2**40], pa.int64())))
    with pytest.raises(fl.SchemaMismatchError, match=r"expected a pyarrow Table"):
        orders.upsert([{"order_id": 1}])  # type: ignore[arg-type]
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
        orders.read(filter=["qty > 1"])  # type: ignore[list-item]


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
