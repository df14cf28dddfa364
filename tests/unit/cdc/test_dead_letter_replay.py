"""``flowlake dead-letters``: list a table's dead letters; replay those that now decode, exactly once and
never over a newer change of the same key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import flowlake as fl
import flowlake.cdc as dl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource
from flowlake.cli.main import app


def msg(op: str, before: Any, after: Any) -> bytes:
    return orjson.dumps(
        {"op": op, "before": before, "after": after, "source": {"db": "shop", "table": "orders"}}
    )


SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("qty", pa.int32()), ("note", pa.string())])


def setup(tmp_path: Path) -> tuple[fl.Catalog, Path]:
    folder = tmp_path / "cdc"
    folder.mkdir()
    lines = [
        msg("c", None, {"id": 1, "qty": 1, "note": "a"}),
        msg("c", None, {"id": 2, "qty": 2, "note": "b"}),
        msg(
            "u", {"id": 1, "qty": 1, "note": "a"}, {"id": 1, "qty": 2**40, "note": "a2"}
        ),  # dead: not an int32
        msg(
            "u", {"id": 2, "qty": 2, "note": "b"}, {"id": 2, "qty": 2**41, "note": "b2"}
        ),  # dead: not an int32
        msg(
            "u", {"id": 2, "qty": 2, "note": "b"}, {"id": 2, "qty": 3, "note": "b3"}
        ),  # newer than the letter
        b"not json",
    ]
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    cat.create_table("ods.orders", SCHEMA, primary_key=["id"])
    (folder / "0001.jsonl").write_bytes(b"\n".join(lines[:2]) + b"\n")
    OdsIngester(cat, JsonlSource(str(folder), follow=False)).run(until_idle=True)
    with (folder / "0001.jsonl").open("ab") as f:  # a later commit: the letters and a newer change of key 2
        f.write(b"\n".join(lines[2:]) + b"\n")
    OdsIngester(cat, JsonlSource(str(folder), follow=False)).run(until_idle=True)
    return cat, folder


def test_list_then_replay_after_a_schema_change(tmp_path: Path) -> None:
    cat, _ = setup(tmp_path)
    table, source_table = dl.resolve_ods_table(cat, "ods.orders")
    assert source_table == "shop.orders" and dl.resolve_ods_table(cat, "shop.orders")[0].name == "ods.orders"
    with pytest.raises(fl.TableNotFoundError) as missing:  # the message was the hint quoted as a name
        dl.resolve_ods_table(cat, "shop.nope")
    assert missing.value.name == "shop.nope"
    assert str(missing.value).startswith("table 'shop.nope' does not exist; no ODS table in namespace 'ods'")
    letters = dl.list_dead_letters(cat, table, source_table)
    assert [x.status for x in letters] == ["dead", "dead"]  # the line that is not JSON has no table
    assert "qty" in letters[0].error and letters[0].position["offset"] > 0 and letters[0].size > 0
    still = dl.replay_dead_letters(cat, table, source_table)
    assert [x.status for x in still] == ["undecodable", "undecodable"]

    table.evolve_schema(pa.schema([SCHEMA.field("id"), ("qty", pa.int64()), ("note", pa.string())]))
    done = dl.replay_dead_letters(cat, table, source_table)
    assert [x.status for x in done] == ["applied", "superseded"], [x.note for x in done]
    rows = {r["id"]: r for r in table.refresh().read().to_pylist()}
    assert rows[1]["qty"] == 2**40 and rows[1]["note"] == "a2"  # the letter landed
    assert rows[2]["qty"] == 3 and rows[2]["note"] == "b3"  # the newer change was not overwritten
    version = table.version
    again = dl.replay_dead_letters(cat, table, source_table)
    assert [x.status for x in again] == ["replayed", "superseded"]
    assert table.refresh().version == version  # nothing applied twice


def test_cli_lists_and_replays(tmp_path: Path) -> None:
    setup(tmp_path)
    args = ["--catalog", f"sqlite:///{tmp_path / 'c.db'}", "--warehouse", (tmp_path / "wh").as_uri()]
    result = CliRunner().invoke(app, ["dead-letters", "ods.orders", *args])
    assert result.exit_code == 0, result.output
    assert "2 dead letter(s)" in result.output and "2 dead" in result.output
    result = CliRunner().invoke(app, ["dead-letters", "shop.orders", "--replay", *args])
    assert result.exit_code == 0, result.output
    assert "undecodable" in result.output


def test_a_letter_from_before_a_failover_is_not_replayed_over_a_newer_change(tmp_path: Path) -> None:
    """After a failover the replica's binlog files and offsets are its own: a commit made after the
    letter can sit at a smaller file/offset. Positions with GTID states compare by the transactions
    they hold, so the newer change of the letter's key keeps the letter dead (by file/offset it would
    look older, and the replay would put the old image back over it)."""
    from flowlake.cdc.deadletter import dead_letter_batch, dead_letter_table
    from flowlake.cdc.record_json import dump_record
    from flowlake.cdc.source import DeadLetter

    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    ods = cat.create_table("ods.orders", SCHEMA, primary_key=["id"])
    key = "mysql://db:3306"

    def commit(rows: list[dict[str, Any]], position: dict[str, Any]) -> None:
        kinds = pa.array([0] * len(rows), pa.int8())
        change = pa.Table.from_pylist(rows, schema=SCHEMA).append_column("_kind", kinds)
        ods.apply(change, sources={key: {**position, "table": "shop.orders"}})

    def letter(record: dict[str, Any], pos: int, seq: int) -> DeadLetter:
        position = {"file": "mysql-bin.000009", "pos": pos, "gtid": f"0-1-{seq}", "gtids": f"0-1-{seq}"}
        raw = dump_record({"table": "shop.orders", **record})
        return DeadLetter(raw, position, "shop.orders", "a value did not fit")

    rows = [{"id": 1, "qty": 1, "note": "a"}, {"id": 2, "qty": 1, "note": "x"}]
    commit(rows, {"file": "mysql-bin.000009", "pos": 100, "gtids": "0-1-4"})
    update = {"kind": "update", "before": rows[0], "after": {"id": 1, "qty": 5, "note": "old"}}
    insert = {"kind": "insert", "values": {"id": 3, "qty": 7, "note": "c"}}
    dead_letter_table(cat, "ods").append(
        dead_letter_batch(key, [letter(update, 900, 5), letter(insert, 950, 6)])
    )
    # the replica, promoted: its binlog restarted at file 000002, and it changed key 1 after the letter
    after = {"file": "mysql-bin.000002", "pos": 4, "gtids": "0-1-7"}
    commit([{"id": 1, "qty": 9, "note": "after failover"}], after)

    table, source_table = dl.resolve_ods_table(cat, "ods.orders")
    outcome = {done.position["pos"]: done for done in dl.replay_dead_letters(cat, table, source_table)}
    assert outcome[900].status == "superseded", outcome[900].note
    assert outcome[950].status == "applied", outcome[950].note
    final = {r["id"]: r for r in cat.load_table("ods.orders").read().to_pylist()}
    assert final[1]["note"] == "after failover" and final[3]["qty"] == 7
