"""ChangeBatch, the one item shape a source hands the ingester: its three forms, and the ingester
fitting a table's batches of every form, in source order, with their dead letters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.cdc.batch import ChangeBatch, UndecodedRow
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.source import ChangeGroup, DeadLetter, Order, TableSpec
from flowlake.errors import InvalidArgumentError

SPEC = TableSpec("db.t", pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())]), ("id",))


class ScriptedSource:
    """A source that hands out the given groups (positions ``{"n": i}``) all in its first poll."""

    def __init__(self, groups: Sequence[ChangeGroup], spec: TableSpec | None = SPEC) -> None:
        self.groups, self.spec = list(groups), spec

    @property
    def key(self) -> str:
        return "scripted"

    def order_of(self, position: Mapping[str, Any]) -> Order:
        return (int(position.get("n", 0)),)

    def start(
        self, resume: Mapping[str, Mapping[str, Any] | None], *, also: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        known = [int(p["n"]) for p in [*resume.values(), *also] if p is not None]
        start = min(known, default=0)
        self.groups = [g for g in self.groups if g.order[0] > start]
        return {"n": start}

    def poll(self, timeout: float) -> list[ChangeGroup]:
        out, self.groups = self.groups, []
        return out

    def describe(self, source_table: str) -> TableSpec | None:
        return self.spec

    def caught_up(self) -> bool:
        return not self.groups

    def close(self) -> None:
        pass


def group(n: int, batch: ChangeBatch | None = None, *dead: DeadLetter) -> ChangeGroup:
    out = ChangeGroup({"n": n}, (n,), dead=list(dead))
    if batch is not None:
        out.batches["db.t"] = batch
    return out


def message(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[bytes, Any]:
    raw = orjson.dumps({"op": op, "before": before, "after": after, "source": {"db": "db", "table": "t"}})
    return raw, orjson.loads(raw)


def changelog(ids: list[int], values: list[str | None], kinds: list[int]) -> ChangeBatch:
    changes = pa.table({"id": ids, "v": pa.array(values, pa.string()), "_kind": pa.array(kinds, pa.int8())})
    return ChangeBatch(changes, np.arange(len(ids)), lambda i: b"record %d" % i)


def ingest(tmp_path: Path, groups: Sequence[ChangeGroup], **options: Any) -> tuple[fl.Catalog, Any]:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    stats = OdsIngester(cat, ScriptedSource(groups, **options)).run(until_idle=True)
    return cat, stats


def ods(cat: fl.Catalog, name: str = "ods.t") -> list[dict[str, Any]]:
    return sorted(cat.load_table(name).read().to_pylist(), key=lambda r: r["id"])


def dead_letters(cat: fl.Catalog) -> list[tuple[bytes, str, dict[str, Any]]]:
    rows = cat.load_table("ods._dead_letter").read().to_pylist()
    return [(r["raw"], r["error"], orjson.loads(r["position"])) for r in rows]


def test_the_three_forms() -> None:
    rows = ChangeBatch.of_rows([(1, {"id": 1}), (2, {"id": 1, "v": "b"})])
    messages = ChangeBatch.of_messages([message("u", {"id": 1}, {"id": 1, "v": "b"})])
    arrow = changelog([1, 1], ["a", "b"], [1, 2])
    assert [b.form for b in (rows, messages, arrow)] == ["rows", "messages", "changelog"]
    assert [len(b) for b in (rows, messages, arrow)] == [2, 1, 2]  # a message counts once
    assert messages.raws() == [messages.raw(0)] and rows.raws()[1] == b'{"id":1,"v":"b"}'
    assert arrow.changelog().num_rows == 2
    with pytest.raises(InvalidArgumentError, match="not an Arrow changelog"):
        rows.changelog()
    with pytest.raises(InvalidArgumentError, match="_kind"):
        ChangeBatch(pa.table({"id": [1]}), np.arange(1), bytes)
    with pytest.raises(InvalidArgumentError, match="one record number per row"):
        ChangeBatch(arrow.changelog(), np.arange(1), bytes)
    assert rows.records.tolist() == [0, 1] and arrow.lines(0, 1).raws() == [b"record 0"]
    undecoded = UndecodedRow({"id": 2}, raw=b"both images", error="bad")
    pair = ChangeBatch.of_rows([(1, undecoded), (2, undecoded)])
    assert pair.raws() == [b"both images", b"both images"]
    g = group(1, pair, DeadLetter(b"x", {}, None, "unroutable"))
    assert g.size == 3 and g.tables == {"db.t"}


def test_one_flush_fits_every_form_in_source_order(tmp_path: Path) -> None:
    undecoded = UndecodedRow({"id": 1, "v": "?"}, raw=b"the update", error="cannot decode v")
    groups = [
        group(1, ChangeBatch.of_rows([(0, {"id": 1, "v": "a"}), (0, {"id": 2, "v": "b"})])),
        group(2, ChangeBatch.of_messages([message("u", {"id": 1, "v": "a"}, {"id": 1, "v": "c"})])),
        group(3, changelog([2, 3], ["b", "d"], [3, 0])),
        group(4, ChangeBatch.of_rows([(1, undecoded), (2, undecoded), (0, {"id": None, "v": "k"})])),
        group(5, ChangeBatch.of_rows([(1, {"id": 3, "v": "d"}), (2, {"id": 3, "v": "e"})])),
    ]
    cat, stats = ingest(tmp_path, groups)
    assert ods(cat) == [{"id": 1, "v": "c"}, {"id": 3, "v": "e"}]
    assert stats.commits == 1 and stats.changes == 8 and stats.dead_letters == 2
    null_key = "primary-key column(s) ['id'] null in a change for 'ods.t'"
    assert dead_letters(cat) == [
        (b"the update", "cannot decode v", {"n": 4}),  # the update's two images, once
        (b'{"id":null,"v":"k"}', null_key, {"n": 4}),
    ]
    assert cat.load_table("ods.t").source_position("scripted") == {"n": 5, "table": "db.t"}


def test_a_value_its_column_cannot_hold_stops_the_table_naming_the_key(tmp_path: Path) -> None:
    groups = [
        group(1, ChangeBatch.of_rows([(0, {"id": 1, "v": "a"})])),
        group(2, ChangeBatch.of_rows([(0, {"id": 2, "v": 5})])),  # an int for a string column
    ]
    cat, stats = ingest(tmp_path, groups)
    assert ods(cat) == []  # nothing of the flush lands: the table stays at its stored position
    assert "the change of key {'id': 2}: column 'v' (string) cannot hold 5" in stats.stopped["ods.t"]
    stored = cat.load_table("ods.t").source_position("scripted")
    assert isinstance(stored, dict) and stored["stopped"]["at"] == {"n": 2} and stored["n"] == 0


def test_columns_rows_bring_evolve_the_table(tmp_path: Path) -> None:
    groups = [
        group(1, ChangeBatch.of_rows([(0, {"id": 1, "v": "a"})])),
        group(2, ChangeBatch.of_rows([(0, {"id": 2, "v": "b", "w": None}), (0, {"id": 3, "w": 7})])),
    ]
    cat, _ = ingest(tmp_path, groups)  # the source does not describe "w": its type is inferred
    assert cat.load_table("ods.t").schema.field("w").type == pa.int64()
    assert ods(cat) == [
        {"id": 1, "v": "a", "w": None},
        {"id": 2, "v": "b", "w": None},
        {"id": 3, "v": None, "w": 7},
    ]


def test_messages_of_a_table_without_a_description_infer_it(tmp_path: Path) -> None:
    groups = [
        group(1, ChangeBatch.of_messages([message("c", None, {"id": 1, "qty": 2.5})])),
        group(2, ChangeBatch.of_messages([message("c", None, {"id": 2, "qty": 3})])),
    ]
    cat, _ = ingest(tmp_path, groups, spec=None)
    assert cat.load_table("ods.t").schema.field("qty").type == pa.float64()
    assert ods(cat) == [{"id": 1, "qty": 2.5}, {"id": 2, "qty": 3.0}]


def test_letters_of_a_stopped_table_land_once_it_is_fixed_although_later_letters_moved_on(
    tmp_path: Path,
) -> None:
    """While ``db.t`` is stopped its changes are skipped, so a letter among them is never written, and
    a later letter of ``db.u`` moves the dead-letter table's position past it: the restart after the
    fix must still write it (it was lost), and a further restart must not write anything twice."""

    def groups(second_value: object) -> list[ChangeGroup]:
        out = [
            ChangeGroup({"n": 1}, (1,)),
            ChangeGroup({"n": 2}, (2,)),
            ChangeGroup({"n": 3}, (3,)),
            ChangeGroup({"n": 4}, (4,)),
        ]
        out[0].batches["db.t"] = ChangeBatch.of_rows([(0, {"id": 1, "v": "a"})])
        out[0].batches["db.u"] = ChangeBatch.of_rows([(0, {"id": 1, "v": "x"})])
        out[1].batches["db.t"] = ChangeBatch.of_rows([(0, {"id": 2, "v": second_value})])
        undecoded = UndecodedRow({"id": 3, "v": "?"}, raw=b"t's bad row", error="cannot decode v")
        out[2].batches["db.t"] = ChangeBatch.of_rows([(0, undecoded)])
        later = UndecodedRow({"id": 2, "v": "?"}, raw=b"u's bad row", error="cannot decode v")
        out[3].batches["db.u"] = ChangeBatch.of_rows([(0, later)])
        return out

    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())

    def run(second_value: object) -> Any:
        source = ScriptedSource(groups(second_value))
        return OdsIngester(cat, source, max_rows=1, catchup_rows=1).run(until_idle=True)

    first = run(5)  # an int for a string column: db.t stops at group 1
    assert "ods.t" in first.stopped
    assert [raw for raw, _, _ in dead_letters(cat)] == [b"u's bad row"]
    run("b")  # the source fixed: db.t resumes at group 1 and its letter of group 3 is written
    expected = [(b"u's bad row", "cannot decode v", {"n": 4}), (b"t's bad row", "cannot decode v", {"n": 3})]
    assert dead_letters(cat) == expected
    assert ods(cat) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    run("b")
    assert dead_letters(cat) == expected  # nothing twice
