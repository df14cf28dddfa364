"""The snapshot/stream handover of the binlog source, driven without a server.

A chunk read between watermarks L and H must be emitted exactly when the stream reaches H: after
every event up to H, before any event after it, without the keys that events in (L, H] touched.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from flowlake.cdc.mysql import MySqlSource, _Chunk, _Snap
from flowlake.cdc.mysql_binlog import TxItem
from flowlake.cdc.mysql_gtid import StoredOrders
from flowlake.cdc.mysql_schema import MySqlUrl, arrow_type
from flowlake.cdc.source import ChangeGroup, TableSpec
from flowlake.errors import InvalidArgumentError

SPEC = TableSpec("db.t", pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())]), ("id",))


def source_with_chunk(low: int, high: int, rows: dict[int, str], *, pos: int = 100) -> MySqlSource:
    src = MySqlSource("mysql://root@127.0.0.1:1/db")
    src._pos = ("f.000001", pos)
    src._snaps = {"db.t": _Snap(SPEC)}
    src._specs = {"db.t": SPEC}
    src._chunk = _Chunk(
        "db.t",
        {(k,): {"id": k, "v": v} for k, v in rows.items()},
        ("f.000001", low),
        ("f.000001", high),
        [max(rows)],
        True,
        len(rows),
    )
    return src


def tx(pos: int, *changes: tuple[int, int, str]) -> TxItem:
    return TxItem("f.000001", pos, None, [("db.t", kind, {"id": k, "v": v}) for kind, k, v in changes])


def rows_of(group: ChangeGroup, table: str = "db.t") -> list[tuple[int, dict[str, Any]]]:
    """The changes of ``table`` the group carries as decoded rows (the form chunks and these small
    transactions take)."""
    batch = group.batches.get(table)
    return [] if batch is None or batch.rows is None else batch.rows


def summary(groups: list[ChangeGroup]) -> list[Any]:
    return [
        (
            "chunk" if "sub" in g.position else g.position["pos"],
            sorted((kind, row["id"], row["v"]) for kind, row in rows_of(g)),
        )
        for g in groups
    ]


def test_chunk_waits_for_the_high_watermark_and_drops_keys_changed_in_the_window() -> None:
    src = source_with_chunk(100, 300, {1: "a", 2: "b", 3: "c"})
    for item in (
        tx(150, (2, 1, "a2")),  # in (L, H]: key 1 is newer in the stream than in the chunk
        tx(300, (3, 3, "c")),  # at H: key 3 deleted
        tx(350, (2, 2, "b2")),  # after H: must come after the chunk
    ):
        src._queue.items.append(item)
    groups = src.poll(0.01)
    assert summary(groups) == [
        (150, [(2, 1, "a2")]),
        (300, [(3, 3, "c")]),
        ("chunk", [(0, 2, "b")]),
        (350, [(2, 2, "b2")]),
    ]
    assert groups[2].extras["db.t"]["snapshot"] == {"done": True, "after": [3], "rows": 3, "chunks": 1}
    assert groups[2].order > groups[1].order and groups[2].order < groups[3].order
    assert src.snapshot_pending == []


def test_chunk_is_held_until_a_position_reaches_high() -> None:
    src = source_with_chunk(100, 300, {1: "a"})
    src._queue.items.append(tx(200, (0, 9, "z")))
    assert summary(src.poll(0.01)) == [(200, [(0, 9, "z")])]  # not yet at H
    assert src._chunk is not None
    src._queue.items.append(("f.000001", 300))  # a heartbeat or a filtered event at H
    assert summary(src.poll(0.01)) == [("chunk", [(0, 1, "a")])]


def test_a_chunk_at_the_current_position_is_emitted_at_once() -> None:
    src = source_with_chunk(100, 100, {1: "a"}, pos=100)
    assert summary(src.poll(0.01)) == [("chunk", [(0, 1, "a")])]


def test_positions_sort_by_file_then_offset_then_chunk() -> None:
    src = MySqlSource("mysql://root@127.0.0.1:1/db")
    a = src.order_of({"file": "mysql-bin.000001", "pos": 900})
    b = src.order_of({"file": "mysql-bin.000002", "pos": 4})
    c = src.order_of({"file": "mysql-bin.000002", "pos": 4, "sub": 7})
    assert a < b < c


def test_urls_and_types() -> None:
    url = MySqlUrl.parse("mysql://app:p%40ss@db.example:3307/shop")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "app",
        "p@ss",
        "db.example",
        3307,
        "shop",
    )
    assert url.key == "mysql://db.example:3307"
    with pytest.raises(InvalidArgumentError, match="mysql://"):
        MySqlUrl.parse("postgres://x")

    def t(data_type: str, column_type: str = "", p: int | None = None, s: int | None = None) -> pa.DataType:
        info = {"data_type": data_type, "column_type": column_type or data_type, "numeric_precision": p}
        return arrow_type({**info, "numeric_scale": s})

    assert t("bigint", "bigint(20) unsigned") == pa.uint64()
    assert t("int") == pa.int32()
    assert t("decimal", "decimal(12,2)", 12, 2) == pa.decimal128(12, 2)
    assert t("decimal", "decimal(65,4)", 65, 4) == pa.decimal256(65, 4)
    assert t("datetime") == pa.timestamp("us")
    assert t("timestamp") == pa.timestamp("us", tz="UTC")
    assert t("time") == pa.duration("us")
    assert t("varchar") == pa.string() and t("enum") == pa.string() and t("blob") == pa.binary()


def apply(state: dict[int, str], groups: list[ChangeGroup]) -> dict[int, str]:
    """What an ODS table holds after ``groups``: row images upsert, deletes remove."""
    for group in groups:
        for kind, row in rows_of(group):
            if kind == 3:
                state.pop(row["id"], None)
            elif kind != 1:
                state[row["id"]] = row["v"]
    return state


def scripted_chunks(src: MySqlSource, *chunks: tuple[int, dict[int, str]]) -> None:
    """Make ``_select_chunk`` answer each chunk SELECT with (snapshot position, rows) in turn."""
    answers = iter(chunks)

    def select(sql: str, params: list[Any]) -> tuple[tuple[str, int], tuple[str, int], Any]:
        pos, rows = next(answers)
        return ("f.000001", pos), ("f.000001", pos), [(k, v) for k, v in sorted(rows.items())]

    src._select_chunk = select  # type: ignore[method-assign]


def test_a_chunk_whose_snapshot_is_behind_the_stream_keeps_no_row_the_stream_already_changed() -> None:
    # The server sends a transaction to replicas once it is in the binlog, before the storage engine
    # commits it, so a chunk's consistent snapshot (position H) can be older than stream groups that
    # were already emitted. Those keys must not be overwritten with the chunk's older rows.
    src = MySqlSource("mysql://root@127.0.0.1:1/db", chunk_size=2)
    src._specs = {"db.t": SPEC}
    src._snaps = {"db.t": _Snap(SPEC)}
    src._pos = src._recent_floor = ("f.000001", 100)
    scripted_chunks(src, (100, {1: "a", 2: "b"}), (120, {3: "c", 4: "d"}), (200, {}))
    src._queue.items.extend([tx(150, (1, 3, "c"), (2, 3, "c2")), tx(200, (3, 4, "d"))])
    first = src.poll(0.01)
    assert summary(first) == [("chunk", [(0, 1, "a"), (0, 2, "b")]), (150, [(1, 3, "c"), (2, 3, "c2")]),
                              (200, [(3, 4, "d")])]  # fmt: skip
    second = src.poll(0.01)  # reads the second chunk at H=120 < the stream's 200
    assert summary(second) == [("chunk", [])]
    assert summary(src.poll(0.01)) == [("chunk", [])]  # after key 4: the table is done
    assert apply({}, first + second) == {1: "a", 2: "b", 3: "c2"}  # the source's state
    assert src.snapshot_pending == []


def test_a_chunk_goes_out_before_the_first_transaction_past_its_high_watermark() -> None:
    src = MySqlSource("mysql://root@127.0.0.1:1/db", chunk_size=10)
    src._specs = {"db.t": SPEC}
    src._snaps = {"db.t": _Snap(SPEC)}
    src._pos = src._recent_floor = ("f.000001", 100)
    scripted_chunks(src, (300, {1: "a"}))
    src._queue.items.append(tx(350, (1, 1, "a"), (2, 1, "a2")))  # no position exactly at H reaches the source
    groups = src.poll(0.01)
    assert summary(groups) == [("chunk", [(0, 1, "a")]), (350, [(1, 1, "a"), (2, 1, "a2")])]
    assert apply({}, groups) == {1: "a2"}


def test_caught_up_compares_with_the_binlog_end_read_at_each_call() -> None:
    src = MySqlSource("mysql://root@127.0.0.1:1/db")
    src._pos = ("f.000001", 500)
    ends = iter([("f.000001", 500), ("f.000001", 640)])
    src._master_status = lambda cur: next(ends)  # type: ignore[method-assign]
    src._cursor = lambda: None  # type: ignore[method-assign]
    assert src.caught_up()
    assert not src.caught_up()  # a commit landed right after the first check


# --- small transactions joined into one group -------------------------------------------------------


def streaming_source(stored: list[int]) -> MySqlSource:
    """A source past its snapshot whose ODS tables stored these positions (file f.000001)."""
    src = MySqlSource("mysql://root@127.0.0.1:1/db")
    src._pos = ("f.000001", 0)
    src._specs = {"db.t": SPEC}
    src._stored_orders = StoredOrders([src.order_of({"file": "f.000001", "pos": p}) for p in stored])
    return src


def test_small_transactions_past_every_stored_position_share_a_group_ending_on_the_last() -> None:
    src = streaming_source([300])
    for item in (tx(100, (0, 1, "a")), tx(200, (0, 2, "b")), tx(300, (0, 3, "c"))):  # held by 300
        src._queue.items.append(item)
    for pos in range(400, 900, 100):
        src._queue.items.append(tx(pos, (0, pos, "n")))
    src.snapshot_mode = "never"
    src.describe = lambda table: SPEC  # type: ignore[method-assign,assignment]  # (no server)
    ddl = tx(900)
    ddl.ddl.append("ALTER db.t")
    src._queue.items += [ddl, tx(1000, (2, 1, "z")), tx(1100, (3, 2, "b"))]
    groups = src.poll(0.01)
    # each transaction a stored position holds stays its own group, so the ingester can skip it
    # for that table; the later ones join, and each group ends where its last transaction ends
    assert summary(groups) == [
        (100, [(0, 1, "a")]),
        (200, [(0, 2, "b")]),
        (300, [(0, 3, "c")]),
        (800, [(0, 400, "n"), (0, 500, "n"), (0, 600, "n"), (0, 700, "n"), (0, 800, "n")]),
        (900, []),  # DDL: a group of its own, with the new shape
        (1100, [(2, 1, "z"), (3, 2, "b")]),
    ]
    assert [r["id"] for _, r in rows_of(groups[3])] == [400, 500, 600, 700, 800]  # in binlog order
    assert groups[4].schemas == {"db.t": SPEC}
    assert groups[3].order == src.order_of({"file": "f.000001", "pos": 800})
    assert all(not (g.order <= s) for g in groups[3:] for s in src._stored_orders.orders)


def test_no_transactions_join_while_a_snapshot_is_pending_and_groups_stay_bounded() -> None:
    src = source_with_chunk(5000, 6000, {1: "a"}, pos=0)
    src._stored_orders = StoredOrders([])
    for pos in range(100, 400, 100):
        src._queue.items.append(tx(pos, (0, pos, "n")))
    assert [g.position["pos"] for g in src.poll(0.01)] == [100, 200, 300]
    src = streaming_source([])
    for pos in range(1, 2502):
        src._queue.items.append(tx(pos, (0, pos, "n")))
    groups = src.poll(0.01)
    assert [len(rows_of(g)) for g in groups] == [1000, 1000, 501]
    assert [g.position["pos"] for g in groups] == [1000, 2000, 2501]


def test_groups_never_hold_more_changes_than_the_ingester_commits_at_once() -> None:
    for limit, sizes in ((1, [1] * 7), (3, [3, 3, 1]), (4, [4, 3])):
        src = streaming_source([])
        src.limit_groups(limit)
        for pos in range(1, 8):
            src._queue.items.append(tx(pos, (0, pos, "n")))
        assert [len(rows_of(g)) for g in src.poll(0.01)] == sizes
    src = streaming_source([])
    src.limit_groups(3)
    src._queue.items += [tx(1, (0, 1, "a")), tx(2, (1, 1, "a"), (2, 1, "b")), tx(3, (3, 1, "b"))]
    assert [len(rows_of(g)) for g in src.poll(0.01)] == [3, 1]  # a transaction is never split


def test_the_ingester_tells_a_grouping_source_its_max_rows(catalog: Any) -> None:
    from flowlake.cdc.ingest import OdsIngester
    from flowlake.cdc.source import GroupingSource

    class Quiet:
        key = "quiet://"

        def __init__(self) -> None:
            self.limits: list[int] = []

        def order_of(self, position: Any) -> Any:
            return (0,)

        def describe(self, source_table: str) -> None:
            return None

        def start(self, resume: Any, *, also: Any = ()) -> dict[str, Any]:
            assert self.limits, "limit_groups must come before start"
            return {}

        def poll(self, timeout: float) -> list[ChangeGroup]:
            return []

        def caught_up(self) -> bool:
            return True

        def close(self) -> None:
            pass

        def limit_groups(self, changes: int) -> None:
            self.limits.append(changes)

    source = Quiet()
    assert isinstance(source, GroupingSource)
    OdsIngester(catalog, source, max_rows=7).run(until_idle=True)
    assert source.limits == [7]


def test_joining_small_transactions_the_quick_way_gives_the_groups_the_general_way_gives() -> None:
    from flowlake.cdc.mysql_gtid import GtidTracker, MariaDbGtids
    from flowlake.cdc.mysql_rows import DecodedEvent

    rng = random.Random(5)

    def items() -> list[Any]:
        out: list[Any] = []
        seqs = {0: 10, 1: 3}
        for pos in range(100, 100 + 400 * 10, 10):
            domain = rng.choice([0, 0, 0, 1])
            seqs[domain] += 1
            gtid = f"{domain}-1-{seqs[domain]}" if rng.random() > 0.02 else None
            rows = rng.choice([1, 1, 1, 2, 40])  # 40: a changelog batch, never joined
            event = DecodedEvent([0] * rows, [list(range(pos, pos + rows)), ["v"] * rows])
            changes: list[Any] = [("db.t", -1, (("id", "v"), event))]
            if rng.random() < 0.05:
                changes.append(("db.t", 0, {"id": -pos, "v": "row"}))  # a row read by the library
            item = TxItem("f.000001", pos, gtid, changes, ts=1)
            out.append(item if rng.random() > 0.02 else ("f.000001", pos))  # now and then a bare position
        return out

    stored = [
        {"file": "f.000001", "pos": 5, "gtids": "0-1-60,1-1-9"},
        {"file": "f.000001", "pos": 5, "gtids": "0-1-30"},
    ]

    def run(quick: bool) -> list[Any]:
        rng.seed(9)
        src = streaming_source([])
        src._targets = {"db.t": SPEC}
        src._gtids, src._by_gtid, src._server = GtidTracker(MariaDbGtids.parse("0-1-10,1-1-3")), True, "1"
        src._stored_orders = StoredOrders([src.order_of(p) for p in stored])
        src.limit_groups(50)
        quick_ones: list[int] = []
        original = src._join_small

        def join_small(item: Any, joining: Any) -> bool:
            joined = quick and original(item, joining)
            quick_ones.append(joined)
            return joined

        src._join_small = join_small  # type: ignore[method-assign]
        src._queue.items.extend(items())
        groups = []
        while src._queue.items:
            groups += src.poll(0.0)
        return [
            (
                g.position,
                str(g.order),
                [(k, r) for k, r in rows_of(g)],
                len(g.batches["db.t"]) if g.batches else 0,
            )
            for g in groups
        ]

    quick, general = run(True), run(False)
    assert quick == general
    assert len(quick) < 300  # small transactions were joined
