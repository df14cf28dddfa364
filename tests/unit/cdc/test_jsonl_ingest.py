"""Debezium JSON lines → ODS: grouping, exactly-once resume, tailing, dead letters, evolution."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.cdc import decode_batch, open_source
from flowlake.cdc.deadletter import count_dead_letters
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource
from flowlake.cdc.source import TableFilter, ods_table_name
from flowlake.errors import InvalidArgumentError


def msg(op: str, before: Any, after: Any, *, table: str = "orders", tx: str | None = None) -> bytes:
    m: dict[str, Any] = {"op": op, "before": before, "after": after, "source": {"db": "shop", "table": table}}
    if tx is not None:
        m["transaction"] = {"id": tx, "total_order": 1, "data_collection_order": 1}
    return orjson.dumps(m)


def tx_event(status: str, tx: str) -> bytes:
    return orjson.dumps({"status": status, "id": tx, "event_count": 2, "data_collections": None})


def write(path: Path, lines: list[bytes], *, mode: str = "ab") -> None:
    with path.open(mode) as f:
        for line in lines:
            f.write(line + b"\n")


def ingest(cat: fl.Catalog, folder: Path, **options: Any) -> Any:
    source = JsonlSource(str(folder), follow=False)
    return OdsIngester(cat, source, **options).run(until_idle=True)


def state(table: fl.LakeTable) -> list[dict[str, Any]]:
    return sorted(table.read().to_pylist(), key=lambda r: r["id"])


def replay(changes: pa.Table) -> dict[Any, dict[str, Any]]:
    """Replay a changelog, checking that every retraction matches the current row (no dup/miss)."""
    live: dict[Any, dict[str, Any]] = {}
    for row in changes.to_pylist():
        kind = row.pop("_kind")
        row.pop("_seq")
        key = row["id"]
        if kind == 0:
            assert key not in live, f"+I for a live key {key}"
            live[key] = row
        elif kind in (1, 3):
            assert live.get(key) == row, f"retraction of {row} but the row was {live.get(key)}"
            del live[key]
        else:
            assert key not in live, f"+U without -U for {key}"
            live[key] = row
    return live


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


def test_transaction_groups_land_in_one_commit_each(catalog: fl.Catalog, folder: Path) -> None:
    write(
        folder / "0001.jsonl",
        [
            tx_event("BEGIN", "t1"),
            msg("c", None, {"id": 1, "v": "a"}, tx="t1"),
            msg("c", None, {"id": 2, "v": "b"}, tx="t1"),
            msg("c", None, {"id": 7, "v": "x"}, tx="t1", table="items"),
            tx_event("END", "t1"),
            msg("u", {"id": 1, "v": "a"}, {"id": 1, "v": "c"}, tx="t2"),
            msg("d", {"id": 2, "v": "b"}, None, tx="t2"),
            msg("c", None, {"id": 3, "v": "z"}),
        ],
    )
    stats = ingest(catalog, folder, max_rows=1, catchup_rows=1)  # every group is a flush of its own
    orders = catalog.load_table("ods.orders")
    assert state(orders) == [{"id": 1, "v": "c"}, {"id": 3, "v": "z"}]
    writes = [c for c in orders.history() if c.operation == "write" and sum(c.summary["rows"].values())]
    assert [c.summary["rows"]["+I"] for c in writes] == [2, 0, 1]  # t1 whole, t2 whole, then the insert
    assert writes[1].summary["rows"] == {"+I": 0, "-U": 1, "+U": 1, "-D": 1}
    items = catalog.load_table("ods.items")
    assert items.read().to_pylist() == [{"id": 7, "v": "x"}]
    key = f"jsonl:{folder}"
    (items_write,) = [c for c in items.history() if c.operation == "write" and c.summary["rows"]["+I"]]
    assert items_write.summary["sources"][key]["offset"] == writes[0].summary["sources"][key]["offset"]
    position = orders.source_position(key)
    assert position is not None
    assert items.source_position(key) == {**position, "table": "shop.items"}
    assert stats.dead_letters == 0


def test_restart_after_a_crash_between_tables_loses_and_repeats_nothing(
    catalog: fl.Catalog, folder: Path
) -> None:
    lines = []
    for i in range(30):
        tx = f"t{i}"
        lines += [
            tx_event("BEGIN", tx),
            msg("c", None, {"id": i, "v": f"o{i}"}, tx=tx),
            msg("c", None, {"id": i, "v": f"i{i}"}, tx=tx, table="items"),
            msg("u", {"id": i - 1, "v": f"o{i - 1}"}, {"id": i - 1, "v": f"o{i - 1}!"}, tx=tx) if i else b"",
            tx_event("END", tx),
        ]
    write(folder / "a.jsonl", [line for line in lines if line])
    commits = 0

    def crash(name: str, commit: fl.Commit, changelog: pa.Table) -> None:
        nonlocal commits
        commits += 1
        if commits in (3, 8, 13):  # a flush commits orders then items: crash between them, or after
            raise RuntimeError("simulated crash")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="simulated"):
            ingest(catalog, folder, max_rows=7, catchup_rows=7, on_commit=crash)
    ingest(catalog, folder, max_rows=7)
    orders, items = catalog.load_table("ods.orders"), catalog.load_table("ods.items")
    expected = [{"id": i, "v": f"o{i}!" if i < 29 else "o29"} for i in range(30)]
    assert state(orders) == expected
    assert state(items) == [{"id": i, "v": f"i{i}"} for i in range(30)]
    assert replay(orders.changes(0)) == {r["id"]: r for r in expected}


def test_tails_growing_files_and_resumes_at_the_exact_byte(catalog: fl.Catalog, folder: Path) -> None:
    first = folder / "0001.jsonl"
    write(first, [msg("c", None, {"id": 1, "v": "a"})])
    with first.open("ab") as f:
        f.write(msg("c", None, {"id": 2, "v": "b"})[:20])  # half a line: a writer mid-append
    ingest(catalog, folder)
    orders = catalog.load_table("ods.orders")
    assert state(orders) == [{"id": 1, "v": "a"}]
    position = orders.source_position(f"jsonl:{folder}")
    assert position is not None
    offset = position["offset"]
    assert offset == len(msg("c", None, {"id": 1, "v": "a"})) + 1
    with first.open("ab") as f:
        f.write(msg("c", None, {"id": 2, "v": "b"})[20:] + b"\n")
    write(folder / "0002.jsonl", [msg("u", {"id": 1, "v": "a"}, {"id": 1, "v": "a2"})])
    stats = ingest(catalog, folder)
    assert stats.skipped_groups == 0 and stats.changes == 3  # +I id 2, then -U/+U id 1
    assert state(orders) == [{"id": 1, "v": "a2"}, {"id": 2, "v": "b"}]
    assert ingest(catalog, folder).changes == 0


def test_following_source_picks_up_new_lines_while_running(catalog: fl.Catalog, folder: Path) -> None:
    path = folder / "live.jsonl"
    write(path, [msg("c", None, {"id": 1, "v": "a"})])
    source = JsonlSource(str(folder), follow=True)
    stop = threading.Event()
    ingester = OdsIngester(catalog, source, max_latency_ms=20)
    runner = threading.Thread(target=lambda: ingester.run(stop=stop, poll_timeout=0.01))
    runner.start()
    try:
        write(path, [msg("c", None, {"id": 2, "v": "b"})])
        for _ in range(200):
            if catalog.table_exists("ods.orders") and len(catalog.load_table("ods.orders").read()) == 2:
                break
            threading.Event().wait(0.02)
    finally:
        stop.set()
        runner.join(10)
    assert state(catalog.load_table("ods.orders")) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


def test_bad_records_go_to_the_dead_letter_table_and_ingestion_goes_on(
    catalog: fl.Catalog, folder: Path
) -> None:
    write(
        folder / "a.jsonl",
        [
            msg("c", None, {"id": 1, "v": "a"}),
            b"{not json",
            msg("c", None, {"id": "not-an-int", "v": "b"}),
            msg("x", None, {"id": 5}),
            orjson.dumps({"op": "c", "after": {"id": 9}}),  # no source block: cannot be routed
            msg("c", None, {"id": 2, "v": "c"}),
            b"null",
        ],
    )
    from flowlake.runtime.observability import REGISTRY

    metric = {"table": "ods._dead_letter"}
    before = REGISTRY.get_sample_value("flowlake_dead_letters_total", metric) or 0.0
    stats = ingest(catalog, folder)
    assert state(catalog.load_table("ods.orders")) == [{"id": 1, "v": "a"}, {"id": 2, "v": "c"}]
    assert stats.dead_letters == 4
    assert REGISTRY.get_sample_value("flowlake_dead_letters_total", metric) == before + 4
    dead = catalog.load_table("ods._dead_letter").read().to_pylist()
    assert sorted(d["raw"] for d in dead) == sorted(
        [
            b"{not json",
            msg("c", None, {"id": "not-an-int", "v": "b"}),
            msg("x", None, {"id": 5}),
            orjson.dumps({"op": "c", "after": {"id": 9}}),
        ]
    )
    assert all(d["error"] and orjson.loads(d["position"])["offset"] > 0 for d in dead)
    assert count_dead_letters(catalog, "ods") == {"shop.orders": 2, "?": 2}
    assert ingest(catalog, folder).dead_letters == 0  # a restart does not repeat them


def test_new_fields_evolve_the_ods_schema(catalog: fl.Catalog, folder: Path) -> None:
    write(folder / "a.jsonl", [msg("c", None, {"id": 1, "v": "a"})])
    ingest(catalog, folder)
    write(folder / "a.jsonl", [msg("c", None, {"id": 2, "v": "b", "qty": 3})])
    ingest(catalog, folder)
    orders = catalog.load_table("ods.orders")
    assert orders.schema.names == ["id", "v", "qty"]
    assert state(orders) == [{"id": 1, "v": "a", "qty": None}, {"id": 2, "v": "b", "qty": 3}]


def test_schema_blocks_give_types_and_a_key_must_be_known(
    catalog: fl.Catalog, folder: Path, tmp_path: Path
) -> None:
    block = {
        "type": "struct",
        "fields": [
            {"field": "before", "type": "struct", "optional": True, "fields": []},
            {
                "field": "after",
                "type": "struct",
                "optional": True,
                "fields": [
                    {"field": "sku", "type": "string", "optional": False},
                    {"field": "day", "type": "int32", "optional": True, "name": "io.debezium.time.Date"},
                ],
            },
            {"field": "op", "type": "string"},
        ],
    }
    payload = {"op": "c", "after": {"sku": "A", "day": 19000}, "source": {"db": "shop", "table": "stock"}}
    write(folder / "a.jsonl", [orjson.dumps({"schema": block, "payload": payload})])
    ingest(catalog, folder)
    assert not catalog.table_exists("ods.stock")
    assert count_dead_letters(catalog, "ods") == {"shop.stock": 1}
    other = fl.connect(catalog=f"sqlite:///{tmp_path / 'other.db'}", warehouse=(tmp_path / "wh2").as_uri())
    ingest(other, folder, primary_keys={"shop.stock": ["sku"]})
    stock = other.load_table("ods.stock")
    assert stock.schema.field("day").type == pa.date32()
    assert stock.primary_key == ("sku",)
    assert stock.read().column("day").to_pylist()[0].isoformat() == "2022-01-08"


def test_table_selection_and_naming() -> None:
    f = TableFilter.parse("shop.*, !shop.tmp_*, crm.users")
    assert f("shop.orders") and f("crm.users") and not f("shop.tmp_x") and not f("crm.other")
    assert f.databases == ["crm", "shop"]
    assert TableFilter.parse("*.orders").databases is None
    with pytest.raises(InvalidArgumentError, match=r"db\.table"):
        TableFilter.parse("orders")
    assert ods_table_name("ods", "Shop.Order-Items") == "ods.order_items"
    assert ods_table_name("ods", "shop.orders", "{db}_{table}") == "ods.shop_orders"
    assert ods_table_name("ods", "shop.2024") == "ods.t_2024"


def test_open_source_rejects_unknown_urls() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown source"):
        open_source("kafka://x")
    with pytest.raises(InvalidArgumentError, match="path"):
        open_source("debezium-jsonl:")


def test_decode_batch_reuses_parsed_objects_and_reports_sources() -> None:
    raw = [
        orjson.dumps(
            {
                "op": "u",
                "before": {"id": 1, "v": "a"},
                "after": {"id": 1, "v": "b"},
                "source": {"connector": "mysql", "db": "shop", "table": "orders", "file": "b.1", "pos": 9},
                "transaction": {"id": "tx-7"},
            }
        ),
        b"",
        b"{broken",
    ]
    parsed = [orjson.loads(raw[0]), None, None]
    batch = decode_batch(raw, parsed=parsed, with_sources=True)
    assert batch.table.column("_kind").to_pylist() == [1, 2]
    assert [e.index for e in batch.errors] == [2]
    first = batch.sources[0]
    assert first is not None and (first.position, first.transaction_id, first.table) == (
        "b.1:9",
        "tx-7",
        "orders",
    )
    assert batch.sources[1:] == (None, None)
    assert decode_batch(raw[:1]).sources == ()
    with pytest.raises(InvalidArgumentError, match="parsed"):
        decode_batch(raw, parsed=parsed[:1])


def test_cli_ingests_jsonl_and_reports_dead_letters(
    catalog: fl.Catalog, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowlake.cli.main import main

    write(
        folder / "a.jsonl",
        [msg("c", None, {"id": 1, "v": "a"}), b"oops", msg("c", None, {"id": 2, "v": "b"})],
    )
    args = ["ingest", "--source", "debezium-jsonl", folder.as_uri(), "--until-idle"]
    args += ["--catalog", f"sqlite:///{tmp_path / 'cli.db'}", "--warehouse", (tmp_path / "cli-wh").as_uri()]
    main(args)
    out = capsys.readouterr().out
    assert "ods.orders" in out and "2 changes" in out and "1 new dead letters" in out
    assert "dead letters in ods._dead_letter" in out and "?: 1" in out


def test_postgres_key_only_before_images_delete_and_update_by_key(catalog: fl.Catalog, folder: Path) -> None:
    def pg(op: str, before: Any, after: Any) -> bytes:
        source = {"connector": "postgresql", "db": "app", "schema": "public", "table": "users", "lsn": 7}
        return orjson.dumps({"op": op, "before": before, "after": after, "source": source})

    write(folder / "a.jsonl", [pg("c", None, {"id": 1, "name": "a"}), pg("c", None, {"id": 2, "name": "b"})])
    ingest(catalog, folder)
    write(
        folder / "a.jsonl",
        [
            pg("u", None, {"id": 1, "name": "a2"}),  # REPLICA IDENTITY DEFAULT: no before
            pg("d", {"id": 2, "name": None}, None),  # key-only before
        ],
    )
    ingest(catalog, folder)
    users = catalog.load_table("ods.users")  # routed by schema.table: public.users
    assert users.read().to_pylist() == [{"id": 1, "name": "a2"}]
    kinds = users.changes(0).column("_kind").to_pylist()
    assert kinds.count(1) == 1 and kinds.count(3) == 1  # exact before-images computed by the table
    assert (
        users.changes(0).filter(pa.compute.equal(users.changes(0).column("_kind"), 3)).to_pylist()[0]["name"]
        == "b"
    )


def test_crash_between_dead_letters_and_ods_commit_keeps_both_exactly_once(
    catalog: fl.Catalog, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(folder / "a.jsonl", [msg("c", None, {"id": 1, "v": "a"})])
    ingest(catalog, folder)  # creates ods.orders with v: string
    write(folder / "a.jsonl", [msg("c", None, {"id": 2, "v": "b"}), msg("c", None, {"id": 3, "v": [1, 2]})])
    original = fl.LakeTable.apply
    crashed: list[str] = []

    def apply_once(self: fl.LakeTable, changes: pa.Table, **kwargs: Any) -> fl.Commit:
        if self.name == "ods.orders" and changes.num_rows and not crashed:
            crashed.append(self.name)
            raise RuntimeError("crash after the dead letters committed")
        return original(self, changes, **kwargs)

    monkeypatch.setattr(fl.LakeTable, "apply", apply_once)
    with pytest.raises(RuntimeError, match="crash after"):
        ingest(catalog, folder)
    assert count_dead_letters(catalog, "ods") == {"shop.orders": 1}
    ingest(catalog, folder)
    assert count_dead_letters(catalog, "ods") == {"shop.orders": 1}
    assert state(catalog.load_table("ods.orders")) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


@pytest.mark.parametrize("catchup_rows", [10, 50])
def test_commits_grow_up_to_catchup_rows_while_the_previous_commit_runs(
    catalog: fl.Catalog, folder: Path, catchup_rows: int
) -> None:
    write(folder / "0001.jsonl", [msg("c", None, {"id": i, "v": f"v{i}"}, tx=f"t{i}") for i in range(300)])
    second_flush = threading.Event()

    class Observed(OdsIngester):
        flushes = 0

        def flush(self, *, wait: bool = True) -> None:
            self.flushes += 1
            if self.flushes == 2:
                second_flush.set()
            super().flush(wait=wait)

    sizes: list[int] = []

    def on_commit(name: str, commit: fl.Commit, changelog: pa.Table) -> None:
        sizes.append(changelog.num_rows)
        if len(sizes) == 1:  # the first commit runs until the source's next changes wanted a flush
            assert second_flush.wait(60)

    source = JsonlSource(str(folder), follow=False)
    ingester = Observed(catalog, source, max_rows=10, catchup_rows=catchup_rows, on_commit=on_commit)
    ingester.run(until_idle=True)
    assert sum(sizes) == 300 and sizes[0] == 10
    assert sizes[1] == catchup_rows  # buffered on while the first commit ran: one larger commit
    assert max(sizes) <= catchup_rows  # never more than catchup_rows, each ending on a group boundary
    assert state(catalog.load_table("ods.orders")) == [{"id": i, "v": f"v{i}"} for i in range(300)]
