"""Debezium envelope rules: operations, envelopes, tombstones, transactions, before-images, errors."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pyarrow as pa
import pytest

from flowlake.cdc import (
    Change,
    SourceInfo,
    debezium_schema_to_arrow,
    decode,
    decode_batch,
)
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import CdcDecodeError, CorruptRecordError, FlowlakeError, InvalidArgumentError

MYSQL_SOURCE = {
    "version": "2.1.0.Final",
    "connector": "mysql",
    "name": "dbserver1",
    "ts_ms": 1465581029100,
    "snapshot": "false",
    "db": "inventory",
    "table": "customers",
    "server_id": 223344,
    "file": "mysql-bin.000003",
    "pos": 484,
    "row": 0,
}
PG_SOURCE = {
    "connector": "postgresql",
    "db": "postgres",
    "schema": "inventory",
    "table": "customers",
    "ts_ms": 1596010889629,
    "snapshot": "false",
    "txId": 602,
    "lsn": 34131104,
}
OLD = {"id": 1, "name": "Anne", "email": "a@x.org"}
NEW = {"id": 1, "name": "Anne Marie", "email": "a@x.org"}


def event(op: str, before: Any = None, after: Any = None, **extra: Any) -> bytes:
    payload: dict[str, Any] = {"before": before, "after": after, "source": MYSQL_SOURCE, "op": op}
    payload["ts_ms"] = 1465581029523
    payload.update(extra)
    return orjson.dumps(payload)


ROW_STRUCT: dict[str, Any] = {
    "type": "struct",
    "optional": True,
    "fields": [
        {"type": "int32", "optional": False, "field": "id"},
        {"type": "string", "optional": True, "field": "name"},
        {"type": "string", "optional": True, "field": "email"},
    ],
}


def envelope_schema(row: dict[str, Any] = ROW_STRUCT) -> dict[str, Any]:
    return {
        "type": "struct",
        "optional": False,
        "name": "dbserver1.inventory.customers.Envelope",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "fields": [], "optional": False, "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
    }


def with_schema(message: bytes, schema: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"schema": schema or envelope_schema(), "payload": orjson.loads(message)})


def kinds_rows(changes: list[Change]) -> list[tuple[str, dict[str, Any]]]:
    return [(c.symbol, c.row) for c in changes]


# --- operations and envelopes ------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["c", "r"])
def test_create_and_read_emit_insert_of_after(op: str) -> None:
    assert kinds_rows(decode(event(op, after=NEW))) == [("+I", NEW)]


def test_update_emits_before_then_after() -> None:
    changes = decode(event("u", OLD, NEW))
    assert kinds_rows(changes) == [("-U", OLD), ("+U", NEW)]
    assert all(c.before_complete for c in changes)


def test_delete_emits_delete_of_before() -> None:
    changes = decode(event("d", OLD, None))
    assert kinds_rows(changes) == [("-D", OLD)]
    assert changes[0].before_complete


def test_schema_include_envelope_decodes_payload() -> None:
    message = with_schema(event("u", OLD, NEW))
    assert kinds_rows(decode(message)) == [("-U", OLD), ("+U", NEW)]


def test_str_and_bytes_messages_decode_alike() -> None:
    message = event("c", after=NEW)
    assert decode(message.decode()) == decode(message) == decode(bytearray(message))


@pytest.mark.parametrize(
    "message",
    [None, b"", "", b"   \n", b"null", b" null ", orjson.dumps({"schema": None, "payload": None})],
    ids=["none", "empty-bytes", "empty-str", "blank", "json-null", "padded-null", "envelope-null"],
)
def test_tombstones_produce_nothing(message: bytes | str | None) -> None:
    assert decode(message) == []


@pytest.mark.parametrize("status", ["BEGIN", "END"])
def test_transaction_boundaries_produce_nothing(status: str) -> None:
    message = {"status": status, "id": "tx:10", "ts_ms": 1, "event_count": None, "data_collections": None}
    assert decode(orjson.dumps(message)) == []
    assert decode(with_schema(orjson.dumps(message), {"type": "struct", "fields": []})) == []


def test_logical_decoding_message_produces_nothing() -> None:
    assert decode(orjson.dumps({"op": "m", "source": PG_SOURCE, "message": {"prefix": "p"}})) == []


def test_transaction_id_travels_on_changes() -> None:
    tx = {"id": "0e4d5dcd:10", "total_order": "1", "data_collection_order": "1"}
    changes = decode(event("u", OLD, NEW, transaction=tx))
    assert [c.source.transaction_id for c in changes] == ["0e4d5dcd:10", "0e4d5dcd:10"]


def test_source_info_for_mysql() -> None:
    (change,) = decode(event("c", after=NEW))
    assert change.source == SourceInfo(
        connector="mysql",
        db="inventory",
        schema=None,
        table="customers",
        ts_ms=1465581029100,
        event_ts_ms=1465581029523,
        position="mysql-bin.000003:484",
        transaction_id=None,
        snapshot=False,
    )


def test_source_info_for_postgres_snapshot() -> None:
    message = orjson.dumps({"before": None, "after": NEW, "source": PG_SOURCE, "op": "r", "ts_ms": "17"})
    (change,) = decode(message)
    assert change.source.position == "34131104"
    assert change.source.schema == "inventory"
    assert change.source.snapshot is True  # op "r" is a snapshot read even if the flag says false
    assert change.source.event_ts_ms == 17  # string-valued ts_ms, as in Debezium's docs


@pytest.mark.parametrize(
    ("flag", "expected"), [("true", True), ("last", True), (True, True), ("false", False)]
)
def test_snapshot_flag(flag: Any, expected: bool) -> None:
    message = orjson.dumps({"after": NEW, "source": {**MYSQL_SOURCE, "snapshot": flag}, "op": "c"})
    assert decode(message)[0].source.snapshot is expected


# --- incomplete before-images (rule 5) ---------------------------------------------------------------


@pytest.mark.parametrize("before", [None, "absent"])
def test_update_without_before_emits_only_update_after(before: Any) -> None:
    payload: dict[str, Any] = {"after": NEW, "op": "u", "source": PG_SOURCE}
    if before is None:
        payload["before"] = None
    (change,) = decode(orjson.dumps(payload))
    assert (change.kind, change.row, change.before_complete) == (RowKind.UPDATE_AFTER, NEW, False)


def test_update_with_key_only_before_emits_only_update_after_given_primary_key() -> None:
    key_only = {"id": 1, "name": None, "email": None}
    (change,) = decode(event("u", key_only, NEW), primary_key=["id"])
    assert (change.symbol, change.row, change.before_complete) == ("+U", NEW, False)


def test_update_with_full_before_and_primary_key_keeps_retraction() -> None:
    changes = decode(event("u", OLD, NEW), primary_key=["id"])
    assert kinds_rows(changes) == [("-U", OLD), ("+U", NEW)]


def test_update_with_before_subset_of_after_is_key_only_without_primary_key() -> None:
    (change,) = decode(event("u", {"id": 1}, NEW))
    assert (change.symbol, change.before_complete) == ("+U", False)


def test_update_with_partial_before_is_key_only_by_schema_width() -> None:
    changes = decode(with_schema(event("u", {"id": 1, "name": "A"}, {"id": 1, "name": "B"})))
    assert [(c.symbol, c.before_complete) for c in changes] == [("+U", False)]


def test_delete_without_before_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError, match=r"'before'.*key is unknown"):
        decode(event("d", None, None))


def test_delete_with_key_only_before_emits_partial_delete() -> None:
    key_only = {"id": 1, "name": None, "email": None}
    (change,) = decode(event("d", key_only, None), primary_key=["id"])
    assert (change.symbol, change.row, change.before_complete) == ("-D", {"id": 1}, False)


def test_delete_with_full_before_and_primary_key_is_complete() -> None:
    (change,) = decode(event("d", OLD, None), primary_key=["id"])
    assert (change.row, change.before_complete) == (OLD, True)


def test_delete_key_only_by_schema_width_keeps_given_fields() -> None:
    (change,) = decode(with_schema(event("d", {"id": 1}, None)))
    assert (change.symbol, change.row, change.before_complete) == ("-D", {"id": 1}, False)


def test_delete_with_key_only_before_missing_key_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError, match=r"key column\(s\) \['id'\]"):
        decode(event("d", {"id": None, "name": None}, None), primary_key=["id"])


def test_key_only_table_before_is_complete() -> None:
    # A table whose every column is a key column has no non-key values to miss.
    changes = decode(event("d", {"a": 1, "b": 2}, None), primary_key=["a", "b"])
    assert changes[0].before_complete


# --- malformed input (rule 6) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "pattern"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"text"', "must be a JSON object, got str"),
        (orjson.dumps({"after": NEW, "source": MYSQL_SOURCE}), "'op' is missing"),
        (orjson.dumps({"after": NEW, "op": "x"}), "unknown value 'x'"),
        (orjson.dumps({"after": NEW, "op": 3}), "unknown value 3"),
        (orjson.dumps({"before": None, "after": None, "op": "c"}), "op 'c' needs an 'after' object"),
        (orjson.dumps({"before": OLD, "op": "u"}), "op 'u' needs an 'after' object"),
        (orjson.dumps({"after": [1], "op": "r"}), "op 'r' needs an 'after' object"),
        (orjson.dumps({"before": [1], "after": NEW, "op": "u"}), "'before' that is not an object"),
        (orjson.dumps({"after": NEW, "op": "c", "source": "s"}), "'source' must be an object"),
        (orjson.dumps({"after": NEW, "op": "c", "ts_ms": "soon"}), "'ts_ms' must be an integer"),
        (orjson.dumps({"after": NEW, "op": "c", "transaction": 5}), "'transaction' must be an object"),
        (orjson.dumps({"schema": 1, "payload": {"after": NEW, "op": "c"}}), "'schema' must be a struct"),
        (orjson.dumps({"schema": None, "payload": [1]}), "'payload' must be an object"),
    ],
)
def test_malformed_messages_raise_corrupt_record_error(message: bytes, pattern: str) -> None:
    with pytest.raises(CorruptRecordError, match=pattern):
        decode(message)


def test_error_names_offset_and_source_position() -> None:
    message = orjson.dumps({"after": None, "op": "c", "source": MYSQL_SOURCE})
    with pytest.raises(CorruptRecordError, match=r"\(offset 42, source position mysql-bin.000003:484\)$"):
        decode(message, offset=42)


def test_truncate_is_a_decode_error_but_not_corrupt() -> None:
    with pytest.raises(CdcDecodeError, match="truncate") as info:
        decode(orjson.dumps({"op": "t", "source": PG_SOURCE}))
    assert not isinstance(info.value, CorruptRecordError)


def test_wrong_logical_value_names_the_field() -> None:
    schema = envelope_schema(
        {"type": "struct", "fields": [{"type": "int32", "name": "io.debezium.time.Date", "field": "born"}]}
    )
    message = with_schema(orjson.dumps({"after": {"born": "2020-01-01"}, "op": "c"}), schema)
    with pytest.raises(CorruptRecordError, match=r"field 'born' \(io.debezium.time.Date\)"):
        decode(message)


def test_non_message_argument_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError):
        decode(123)  # type: ignore[arg-type]


# --- decode_batch ---------------------------------------------------------------------------------------


def test_batch_builds_changelog_table_with_kind_column() -> None:
    messages = [event("r", after=OLD), event("u", OLD, NEW), None, event("d", NEW, None)]
    batch = decode_batch(messages)
    assert batch.table.column_names == ["id", "name", "email", KIND_COLUMN]
    assert batch.table.schema.field(KIND_COLUMN).type == pa.int8()
    assert batch.table.column(KIND_COLUMN).to_pylist() == [0, 1, 2, 3]
    assert batch.table.column("name").to_pylist() == ["Anne", "Anne", "Anne Marie", "Anne Marie"]
    assert batch.message_index.to_pylist() == [0, 1, 1, 3]
    assert (batch.errors, batch.incomplete_rows, batch.skipped) == ((), (), 1)


def test_batch_reports_bad_messages_and_goes_on() -> None:
    messages = [event("c", after=OLD), b"{broken", orjson.dumps({"op": "z", "source": MYSQL_SOURCE}), b"5"]
    messages.append(event("d", OLD, None))
    batch = decode_batch(messages)
    assert [e.index for e in batch.errors] == [1, 2, 3]
    assert "not valid JSON" in batch.errors[0].reason
    assert "unknown value 'z'" in batch.errors[1].reason
    assert "mysql-bin.000003:484" in batch.errors[1].reason
    assert batch.table.column(KIND_COLUMN).to_pylist() == [0, 3]
    assert batch.message_index.to_pylist() == [0, 4]


def test_batch_marks_incomplete_rows() -> None:
    key_only = {"id": 1, "name": None, "email": None}
    messages = [event("u", None, NEW), event("u", OLD, NEW), event("d", key_only, None)]
    batch = decode_batch(messages, primary_key=["id"])
    assert batch.table.column(KIND_COLUMN).to_pylist() == [2, 1, 2, 3]
    assert batch.incomplete_rows == (0, 3)
    assert batch.table.slice(3).to_pylist() == [{"id": 1, "name": None, "email": None, KIND_COLUMN: 3}]


def test_batch_applies_key_only_rule_without_primary_key() -> None:
    batch = decode_batch([event("u", {"id": 1}, NEW), event("u", OLD, NEW)])
    assert batch.table.column(KIND_COLUMN).to_pylist() == [2, 1, 2]
    assert batch.incomplete_rows == (0,)


def test_batch_transactions_and_tombstones_are_skipped() -> None:
    begin = orjson.dumps({"status": "BEGIN", "id": "t1"})
    batch = decode_batch(
        [begin, event("c", after=OLD), b"null", b"", orjson.dumps({"status": "END", "id": "t1"})]
    )
    assert (batch.table.num_rows, batch.skipped, batch.errors) == (1, 4, ())


def test_batch_value_that_breaks_an_inferred_column_fails_only_its_message() -> None:
    odd = {"id": "one", "name": "X", "email": None}
    batch = decode_batch([event("c", after=OLD), event("c", after=odd), event("c", after=NEW)])
    assert [e.index for e in batch.errors] == [1]
    assert "field 'id'" in batch.errors[0].reason
    assert batch.table.column("id").type == pa.int64()
    assert batch.message_index.to_pylist() == [0, 2]


def test_batch_with_explicit_schema_casts_and_rejects_unknown_columns() -> None:
    schema = pa.schema([("id", pa.int16()), ("name", pa.string()), ("email", pa.string())])
    extra = {**NEW, "age": 3}
    batch = decode_batch([event("c", after=OLD), event("c", after=extra)], schema)
    assert batch.table.schema.field("id").type == pa.int16()
    assert [e.index for e in batch.errors] == [1]
    assert "'age' is not in the given schema" in batch.errors[0].reason


def test_batch_rejects_values_that_do_not_fit_the_schema() -> None:
    schema = pa.schema([("id", pa.int8()), ("name", pa.string()), ("email", pa.string())])
    messages = [
        event("c", after={**OLD, "id": 1000}),
        event("c", after={**OLD, "id": 1.5}),
        event("c", after=OLD),
    ]
    batch = decode_batch(messages, schema)
    assert [e.index for e in batch.errors] == [0, 1]
    assert batch.table.column("id").to_pylist() == [1]


def test_batch_rejects_reserved_column_in_rows() -> None:
    batch = decode_batch([event("c", after={**OLD, "_kind": 1}), event("c", after=OLD)])
    assert [e.index for e in batch.errors] == [0]
    assert "reserved" in batch.errors[0].reason
    assert batch.table.column_names == ["id", "name", "email", KIND_COLUMN]


def test_batch_schema_with_reserved_column_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="_kind"):
        decode_batch([], pa.schema([("_kind", pa.int8())]))


def test_batch_primary_key_must_be_names() -> None:
    with pytest.raises(InvalidArgumentError):
        decode_batch([], primary_key="id")


def test_batch_uses_schema_block_types() -> None:
    batch = decode_batch([with_schema(event("c", after=OLD)), with_schema(event("c", after=NEW))])
    assert batch.table.schema.field("id").type == pa.int32()
    assert batch.table.num_rows == 2


def test_batch_schema_change_of_a_field_type_fails_that_message() -> None:
    changed = {**ROW_STRUCT, "fields": [{"type": "string", "field": "id"}, *ROW_STRUCT["fields"][1:]]}
    messages = [
        with_schema(event("c", after=OLD)),
        with_schema(event("c", after={**OLD, "id": "x"}), envelope_schema(changed)),
    ]
    batch = decode_batch(messages)
    assert [e.index for e in batch.errors] == [1]
    assert "changes type within the batch" in batch.errors[0].reason


def test_batch_union_of_columns_in_first_appearance_order() -> None:
    batch = decode_batch([event("c", after={"b": 1}), event("c", after={"a": 2, "b": 3})])
    assert batch.table.column_names == ["b", "a", KIND_COLUMN]
    assert batch.table.column("a").to_pylist() == [None, 2]


def test_empty_batch() -> None:
    batch = decode_batch([])
    assert batch.table.column_names == [KIND_COLUMN]
    assert (batch.table.num_rows, batch.errors, batch.skipped) == (0, (), 0)


def test_batch_never_raises_for_garbage() -> None:
    batch = decode_batch([b"\xff\xfe", b"{}", b'{"op": null}', b"[]", b"\x00"])
    assert [e.index for e in batch.errors] == [0, 1, 2, 3, 4]
    assert all(isinstance(e.reason, str) and e.reason for e in batch.errors)


def test_errors_are_flowlake_errors() -> None:
    assert issubclass(CorruptRecordError, FlowlakeError)


# --- schema block → Arrow ------------------------------------------------------------------------------


def test_debezium_schema_to_arrow_from_struct_and_envelope() -> None:
    expected = pa.schema(
        [pa.field("id", pa.int32(), nullable=False), ("name", pa.string()), ("email", pa.string())]
    )
    assert debezium_schema_to_arrow(ROW_STRUCT) == expected
    assert debezium_schema_to_arrow(envelope_schema()) == expected


def test_debezium_schema_to_arrow_rejects_malformed_block() -> None:
    with pytest.raises(CorruptRecordError, match="unknown Connect type 'int128'"):
        debezium_schema_to_arrow({"type": "struct", "fields": [{"type": "int128", "field": "x"}]})
    with pytest.raises(CorruptRecordError, match="'fields' list"):
        debezium_schema_to_arrow({"type": "struct"})


# --- one test per kind of bad input: each error names the field and where the record sits -----------------


def typed(row_fields: list[dict[str, Any]], after: dict[str, Any]) -> bytes:
    """A schema-include message whose row struct has these fields."""
    row = {"type": "struct", "optional": True, "fields": row_fields}
    return with_schema(event("c", after=after), envelope_schema(row))


def batch_reason(message: bytes, good: bytes | None = None, **options: Any) -> str:
    """decode_batch's reason for the message, which fails in a batch after a good one (that stays)."""
    batch = decode_batch([good or event("c", after=OLD), message], **options)
    assert [e.index for e in batch.errors] == [1] and batch.table.num_rows == 1
    return batch.errors[0].reason


ID = {"type": "int32", "optional": False, "field": "id"}
POSITION = r"\(offset 7, source position mysql-bin.000003:484\)$"


def test_wrong_schema_block_names_the_field_its_type_and_the_record() -> None:
    fields = [ID, {"type": "int64", "optional": True, "field": "name"}]
    message = typed(fields, {"id": 1, "name": "Anne"})
    with pytest.raises(
        CorruptRecordError, match=r"field 'name' \(int64\): expected a 64-bit integer .*'Anne' "
    ):
        decode(message, offset=7)
    assert batch_reason(message, typed(fields, {"id": 2, "name": 5})).startswith("field 'name': ")
    decimal_on_string = {"type": "string", "name": "org.apache.kafka.connect.data.Decimal", "field": "price"}
    with pytest.raises(
        CorruptRecordError, match=r"'price': logical type .*Decimal cannot sit on Connect type 'string'"
    ):
        decode(typed([ID, decimal_on_string], {"id": 1, "price": "AQ=="}))
    with pytest.raises(CorruptRecordError, match=r"field 'id' appears twice"):
        decode(typed([ID, ID], {"id": 1}))


def test_value_outside_an_explicit_schema_names_field_and_position() -> None:
    schema = pa.schema([("id", pa.int32()), ("name", pa.string()), ("email", pa.string())])
    message = event("c", after={**OLD, "email": 5})
    with pytest.raises(
        CorruptRecordError, match=r"field 'email' \(string\): expected a string .*got 5 " + POSITION
    ):
        decode(message, schema=schema, offset=7)
    assert batch_reason(message, schema=schema).endswith("(source position mysql-bin.000003:484)")


@pytest.mark.parametrize("after", [{**NEW, "id": None}, {"name": "Anne Marie", "email": "a@x.org"}])
def test_null_or_missing_key_is_refused_when_the_key_is_known(after: dict[str, Any]) -> None:
    state = "null" if "id" in after else "missing"
    pattern = (
        rf"primary-key field 'id' is {state} in 'after' of a change to 'inventory.customers'.*" + POSITION
    )
    with pytest.raises(CorruptRecordError, match=pattern):
        decode(event("u", OLD, after), primary_key=["id"], offset=7)
    assert "primary-key field 'id'" in batch_reason(event("u", OLD, after), primary_key=["id"])
    assert decode(event("c", after=after))[0].row.get("id") is None  # without a known key it is only data


def test_huge_values_are_quoted_short() -> None:
    huge = "7" * 100_000
    message = typed([ID, {"type": "int64", "optional": True, "field": "qty"}], {"id": 1, "qty": huge})
    with pytest.raises(
        CorruptRecordError, match=r"field 'qty' \(int64\): .*\.\.\. \(100000 characters\)"
    ) as info:
        decode(message)
    assert len(str(info.value)) < 300
    assert len(batch_reason(message)) < 300
    big = typed([ID, {"type": "int64", "optional": True, "field": "qty"}], {"id": 1, "qty": 2**64 - 1})
    with pytest.raises(
        CorruptRecordError, match=r"'qty' \(int64\): 18446744073709551615 does not fit in 64 bits"
    ):
        decode(big)
    assert (
        decode(typed([ID, {"type": "string", "field": "name"}], {"id": 1, "name": "x" * 10**6}))[0].row[
            "name"
        ]
        == "x" * 10**6
    )  # a huge string is still a string


def test_unicode_is_kept_and_invalid_utf8_or_unpaired_surrogates_are_named() -> None:
    text = "A\u0301 \U0001f600 \u05d0\u05d1 \u0000 \ufeff"
    assert decode(event("c", after={**OLD, "name": text}))[0].row["name"] == text
    invalid = event("c", after=OLD).replace(b'"Anne"', b'"An\xffne"')
    with pytest.raises(
        CorruptRecordError, match=r"message is not valid UTF-8 \(byte \d+ cannot be decoded\)"
    ):
        decode(invalid)
    assert "not valid UTF-8" in batch_reason(invalid)
    escaped = event("c", after=OLD).replace(b'"Anne"', b'"An\\ud800ne"')
    with pytest.raises(CorruptRecordError, match=r"not valid JSON: .*surrogate"):
        decode(escaped)
    with pytest.raises(
        CorruptRecordError, match=r"message is not valid UTF-8 \(character \d+ cannot be decoded\)"
    ):
        decode(event("c", after=OLD).decode().replace("Anne", "An\ud800ne"))


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("field", [b"id", b"email"])
def test_nan_and_infinity_tokens_are_not_json(token: bytes, field: bytes) -> None:
    """JSON has no NaN, in a key or in a value: the producer must send null or a string instead."""
    message = event("c", after={"id": 1, "email": 2}).replace(
        b'"' + field + b'":' + (b"1" if field == b"id" else b"2"), b'"' + field + b'":' + token
    )
    pattern = rf"not valid JSON: {token.decode()} at character \d+ is not a JSON number; .*send null"
    with pytest.raises(CorruptRecordError, match=pattern):
        decode(message)
    assert token.decode() in batch_reason(message)


def test_nan_decimal_text_is_refused() -> None:
    schema = pa.schema([("id", pa.int32()), ("price", pa.decimal128(10, 2))])
    with pytest.raises(
        CorruptRecordError, match=r"field 'price' .*'NaN' cannot be stored in a decimal column"
    ):
        decode(event("c", after={"id": 1, "price": "NaN"}), schema=schema, decimal_handling="string")


def test_decimal_out_of_range_names_the_type() -> None:
    price = {
        "type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal", "field": "price",
        "parameters": {"scale": "2", "connect.decimal.precision": "5"},
    }  # fmt: skip
    too_big = base64.b64encode((10**5).to_bytes(4, "big", signed=True)).decode()  # 1000.00 in decimal(5, 2)
    message = typed([ID, price], {"id": 1, "price": too_big})
    pattern = (
        r"field 'price' .*Decimal\): Decimal\('1000.00'\) does not fit decimal\(5, 2\): more than 3 digits"
    )
    with pytest.raises(CorruptRecordError, match=pattern):
        decode(message)
    assert "does not fit decimal(5, 2)" in batch_reason(
        message, typed([ID, price], {"id": 2, "price": "AQ=="})
    )
    schema = pa.schema([("id", pa.int32()), ("price", pa.decimal128(5, 2))])
    finer = event("c", after={"id": 1, "price": "1.234"})
    with pytest.raises(
        CorruptRecordError, match=r"'1.234'\) does not fit decimal\(5, 2\): more than 2 digits after"
    ):
        decode(finer, schema=schema, decimal_handling="string")
    good = event("c", after={"id": 2, "price": "1.23"})
    assert "more than 2 digits after" in batch_reason(finer, good, schema=schema, decimal_handling="string")


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        (
            {"type": "int64", "name": "io.debezium.time.MicroTimestamp"},
            2**62,
            r"4611686018427387904 µs since the epoch",
        ),
        (
            {"type": "int64", "name": "io.debezium.time.Timestamp"},
            -(2**62),
            r"-4611686018427387904 ms since the epoch",
        ),
        ({"type": "int32", "name": "io.debezium.time.Date"}, 3_000_000, r"3000000 days since 1970-01-01"),
        (
            {"type": "string", "name": "io.debezium.time.ZonedTimestamp"},
            "9999-12-31T23:00:00-05:00",
            r"'9999-12-31",
        ),
        (
            {"type": "array", "items": {"type": "int64", "name": "io.debezium.time.MicroTimestamp"}},
            [0, 2**62],
            "µs",
        ),
    ],
)
def test_timestamps_outside_years_1_to_9999_are_refused_alike(
    field: dict[str, Any], value: Any, pattern: str
) -> None:
    message = typed([ID, {**field, "optional": True, "field": "at"}], {"id": 1, "at": value})
    with pytest.raises(
        CorruptRecordError, match=rf"field 'at.*{pattern}.*outside the supported .*\(years 1-9999\)"
    ):
        decode(message)
    reason = batch_reason(message)
    assert reason.startswith("field 'at") and "(years 1-9999)" in reason
