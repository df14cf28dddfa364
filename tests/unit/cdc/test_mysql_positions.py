"""Binlog positions without a server: GTID states, the resume order, where reading starts.

The question the ingester asks of every re-read group is "does this ODS table already hold it?"
(``group.order <= stored order``). With GTIDs the answer must be exact on any server of the
topology, including a replica that interleaved replication domains differently from the server that
wrote the stored position; without them, ``(file, pos, sub)`` on the one server.
"""

from __future__ import annotations

import doctest
import importlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pytest

from flowlake.cdc.mysql import MySqlSource, _Chunk, _Snap
from flowlake.cdc.mysql_binlog import TxItem
from flowlake.cdc.mysql_gtid import GtidTracker, MariaDbGtids, MySqlGtids, ResumeOrder, stored_gtids
from flowlake.cdc.mysql_resume import PositionError, gtid_strict, resume_point
from flowlake.cdc.mysql_schema import MySqlUrl
from flowlake.cdc.source import TableSpec
from flowlake.errors import InvalidArgumentError

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "8a94f357-aab4-11df-86ab-c80aa9429563"


@pytest.mark.parametrize(
    "name", ["flowlake.cdc.mysql_gtid", "flowlake.cdc.mysql_schema", "flowlake.cdc.mysql_resume"]
)
def test_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# --- GTID states -------------------------------------------------------------------------------------


def test_mariadb_states() -> None:
    state = MariaDbGtids.parse(" 1-2-5, 0-1-17 ")
    assert str(state) == "0-1-17,1-2-5"
    assert state.holds("0-9-17") and not state.holds("0-1-18") and not state.holds("7-1-1")
    assert str(state.with_gtid("0-3-18")) == "0-3-18,1-2-5"
    assert str(state.with_gtid("2-1-1")) == "0-1-17,1-2-5,2-1-1"
    assert state.with_gtid("junk") == state
    assert state.covers(MariaDbGtids.parse("0-1-3")) and not state.covers(MariaDbGtids.parse("0-1-3,2-1-1"))
    assert MariaDbGtids.parse("").covers(MariaDbGtids())
    # a domain one state lacks is read from its beginning, so the meet lacks it too
    assert str(state.meet(MariaDbGtids.parse("0-1-20,2-1-4"))) == "0-1-17"
    assert state.missing(MariaDbGtids.parse("0-1-20,1-2-5,3-1-1")) == "0-1-20,3-1-1"
    for bad in ("0-1", "a-b-c", "0-1-2,0-1-3"):
        with pytest.raises(InvalidArgumentError, match="MariaDB GTID"):
            MariaDbGtids.parse(bad)


def test_a_tracker_advances_the_state_by_one_transaction() -> None:
    tracker = GtidTracker(MariaDbGtids.parse("0-1-10,2-1-3"))
    assert tracker.advance("1-4-1") == (1, 1) and tracker.text == "0-1-10,1-4-1,2-1-3"
    assert tracker.advance("0-1-11") == (0, 11) and tracker.text == "0-1-11,1-4-1,2-1-3"
    assert tracker.state == MariaDbGtids.parse("0-1-11,1-4-1,2-1-3")
    assert tracker.advance("0-1") is None and tracker.advance("x-1-2") is None
    assert tracker.advance(f"{UUID_A}:4") is None  # the other flavour: not this stream's
    assert tracker.text == "0-1-11,1-4-1,2-1-3"
    mysql = GtidTracker(MySqlGtids.parse(f"{UUID_A}:1-3"))
    assert mysql.advance(f"{UUID_A}:4") == (UUID_A, 4) and mysql.text == f"{UUID_A}:1-4"
    assert mysql.advance("00000000-0000-0000-0000-000000000000:0") is None
    assert mysql.advance("0-1-2") is None and mysql.text == f"{UUID_A}:1-4"


def test_mysql_sets() -> None:
    state = MySqlGtids.parse(f"{UUID_B}:1-3,\n{UUID_A.upper()}:1-5:7:6")
    assert str(state) == f"{UUID_A}:1-7,{UUID_B}:1-3"  # sorted, lower case, intervals merged
    assert state.holds(f"{UUID_A}:4") and not state.holds(f"{UUID_A}:8") and not state.holds(f"{UUID_B}:4")
    assert not state.holds("00000000-0000-0000-0000-000000000000:1")  # anonymous: not a transaction
    assert str(state.with_gtid(f"{UUID_B}:5")) == f"{UUID_A}:1-7,{UUID_B}:1-3:5"
    assert str(state.with_gtid(f"{UUID_B}:5").with_gtid(f"{UUID_B}:4")) == f"{UUID_A}:1-7,{UUID_B}:1-5"
    other = MySqlGtids.parse(f"{UUID_A}:3-9:20,{UUID_B}:9")
    assert str(state.meet(other)) == f"{UUID_A}:3-7"
    assert state.covers(MySqlGtids.parse(f"{UUID_A}:2-4")) and not state.covers(other)
    assert state.missing(other) == f"{UUID_A}:3-9:20,{UUID_B}:9"
    for bad in ("abc:1", f"{UUID_A}", f"{UUID_A}:x"):
        with pytest.raises(InvalidArgumentError, match="MySQL GTID"):
            MySqlGtids.parse(bad)


def test_stored_states_are_told_apart_by_their_text() -> None:
    assert isinstance(stored_gtids({"gtids": "0-1-2"}), MariaDbGtids)
    assert isinstance(stored_gtids({"gtids": f"{UUID_A}:1-2"}), MySqlGtids)
    assert stored_gtids({"gtids": ""}) is None
    assert stored_gtids({"gtids": ""}, "mariadb") == MariaDbGtids()
    assert stored_gtids({"gtids": "nonsense"}) is None
    assert stored_gtids({"file": "f", "pos": 4}) is None


# --- the resume order --------------------------------------------------------------------------------


def mariadb_history(rng: random.Random, n: int, domains: int) -> list[str]:
    seqs = dict.fromkeys(range(domains), 0)
    out = []
    for _ in range(n):
        d = rng.randrange(domains)
        seqs[d] += 1
        out.append(f"{d}-1-{seqs[d]}")
    return out


def interleave_differently(rng: random.Random, history: list[str]) -> list[str]:
    """What a replica may write: each domain in its own order, the domains interleaved anew."""
    queues: dict[str, list[str]] = {}
    for g in history:
        queues.setdefault(g.split("-")[0], []).append(g)
    out = []
    while any(queues.values()):
        d = rng.choice([k for k, q in queues.items() if q])
        out.append(queues[d].pop(0))
    return out


@pytest.mark.parametrize("seed", range(30))
def test_a_group_is_skipped_exactly_when_the_stored_state_holds_it_on_any_server(seed: int) -> None:
    rng = random.Random(seed)
    history = mariadb_history(rng, 40, rng.randint(1, 3))
    # each table stored the state after some transaction on the primary
    cut = {table: rng.randrange(len(history) + 1) for table in ("a", "b", "c")}
    stored: dict[str, MariaDbGtids] = {}
    for table, n in cut.items():
        state = MariaDbGtids()
        for g in history[:n]:
            state = state.with_gtid(g)
        stored[table] = state
    start = stored["a"].meet(stored["b"]).meet(stored["c"])
    replica = interleave_differently(rng, history)
    sent = [g for g in replica if not start.holds(g)]  # what the server sends from the start state
    for table, state in stored.items():
        resume = ResumeOrder(state, "primary-bin.000009", 100 + cut[table])
        applied = set(history[: cut[table]])
        for i, g in enumerate(sent):
            group = ResumeOrder.of_transaction(g, "replica-bin.000001", 1000 + i)
            assert (group <= resume) == (g in applied), (table, g)
            assert (group > resume) == (g not in applied)
    assert set(history) - set(sent) <= set.intersection(*(set(history[:n]) for n in cut.values()))


def test_chunks_sort_after_the_stream_group_at_the_same_state() -> None:
    state = MariaDbGtids.parse("0-1-9")
    stream_stored = ResumeOrder(state, "f", 100)
    chunk = ResumeOrder(state, "f", 100, sub=7)
    assert not chunk <= stream_stored and chunk > stream_stored and stream_stored < chunk
    assert ResumeOrder(state, "g", 5, sub=7) == chunk  # the same place, read on another server
    assert chunk <= ResumeOrder(state.with_gtid("0-1-10"), "f", 200)
    assert str(chunk) == "0-1-9:7"


def test_positions_without_a_state_compare_by_file_and_offset() -> None:
    legacy = ResumeOrder(None, "mysql-bin.000002", 500)
    group = ResumeOrder.of_transaction("0-1-3", "mysql-bin.000002", 400)
    assert group <= legacy and not group > legacy
    assert ResumeOrder.of_transaction("0-1-4", "mysql-bin.000002", 600) > legacy
    assert str(legacy) == "mysql-bin.000002:500:0"  # the commit tokens of file/pos positions as before
    # states of different flavours are not comparable: file/offset again
    assert ResumeOrder.of_transaction(f"{UUID_A}:1", "a", 1) < ResumeOrder(MariaDbGtids(), "a", 2)
    assert ResumeOrder.of_transaction("0-1-9", "a", 3) > ResumeOrder(
        MySqlGtids.parse(f"{UUID_A}:1-9"), "a", 2
    )


def test_transactions_compared_with_each_other_and_with_states() -> None:
    a, b = ResumeOrder.of_transaction("0-1-5", "f", 1), ResumeOrder.of_transaction("0-1-6", "f", 2)
    other_domain = ResumeOrder.of_transaction("1-1-1", "f", 3)
    assert (
        a < b
        and a <= b
        and b > a
        and b >= a
        and not b <= a
        and a == ResumeOrder.of_transaction("0-1-5", "g", 9)
    )
    assert not other_domain <= b and not b <= other_domain  # neither holds the other
    assert min(b, a) is a
    state = ResumeOrder(MariaDbGtids.parse("0-1-5"), "f", 1)
    assert state <= b and not b <= state and a <= state
    mysql = ResumeOrder(MySqlGtids.parse(f"{UUID_A}:1-3:5"), "f", 1)
    assert ResumeOrder.of_transaction(f"{UUID_A}:5", "x", 1) <= mysql
    assert ResumeOrder.of_transaction(f"{UUID_A}:4", "x", 1) > mysql
    assert ResumeOrder.of_transaction(f"{UUID_B}:1", "x", 1) > mysql


# --- the source's groups -----------------------------------------------------------------------------

SPEC = TableSpec("db.t", pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())]), ("id",))


def gtid_source(url: str = "mysql://root@127.0.0.1:1/db") -> MySqlSource:
    src = MySqlSource(url)
    src._flavour, src._server, src._gtids = "mariadb", "2", GtidTracker(MariaDbGtids.parse("0-1-10,1-1-3"))
    src._by_gtid = src.url.gtid != "off"
    src._specs = {"db.t": SPEC}
    return src


def test_stream_and_chunk_groups_store_the_full_state_and_compare_by_their_own_gtid() -> None:
    src = gtid_source()
    src._snaps = {"db.t": _Snap(SPEC)}
    src._chunk = _Chunk("db.t", {(1,): {"id": 1, "v": "a"}}, ("f", 0), ("f", 300), [1], True, 1)
    src._queue.items.extend(
        [
            TxItem("f", 200, "1-1-4", [("db.t", 0, {"id": 2, "v": "b"})]),
            TxItem("f", 400, "0-1-11", [("db.t", 0, {"id": 3, "v": "c"})]),
        ]
    )
    first, chunk, second = src.poll(0.01)
    assert first.position == {
        "file": "f",
        "pos": 200,
        "gtid": "1-1-4",
        "gtids": "0-1-10,1-1-4",
        "server": "2",
    }
    assert chunk.position["gtids"] == "0-1-10,1-1-4" and chunk.position["sub"] > 0
    assert second.position["gtids"] == "0-1-11,1-1-4"
    stored = src.order_of({"file": "other-bin.000001", "pos": 7, "gtids": "0-1-11,1-1-3"})
    # the table holds 0-1-11 but not 1-1-4: whatever the file names and offsets say
    assert first.order > stored and second.order <= stored and chunk.order > stored
    assert src.order_of(chunk.position) == chunk.order


def test_gtid_off_orders_by_file_and_offset_but_still_records_the_state() -> None:
    src = gtid_source("mysql://root@127.0.0.1:1/db?gtid=off")
    src._queue.items.append(TxItem("f", 200, "1-1-4", [("db.t", 0, {"id": 2, "v": "b"})]))
    (group,) = src.poll(0.01)
    assert group.position["gtids"] == "0-1-10,1-1-4"
    assert group.order > src.order_of({"file": "f", "pos": 100, "gtids": "0-1-99,1-1-99"})


def test_urls_name_the_position_key_and_the_gtid_mode() -> None:
    url = MySqlUrl.parse("mysql://root@replica:3307/shop?key=mysql://primary:3306&gtid=off")
    assert (url.key, url.gtid, url.database, url.port) == ("mysql://primary:3306", "off", "shop", 3307)
    assert MySqlUrl.parse("mysql://root@h/db").key == "mysql://h:3306"
    assert MySqlSource("mysql://root@replica:3307/shop?key=mysql://p:1").key == "mysql://p:1"
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        MySqlUrl.parse("mysql://root@h/db?kye=x")
    with pytest.raises(InvalidArgumentError, match="gtid must be"):
        MySqlUrl.parse("mysql://root@h/db?gtid=on")


def test_urls_choose_the_binlog_reader() -> None:
    assert MySqlUrl.parse("mysql://root@h/db").binlog == "fast"
    library = MySqlSource("mysql://root@h/db?binlog=library&key=mysql://p:1")
    assert (library.url.binlog, library.fast_binlog, library.key) == ("library", False, "mysql://p:1")
    assert (
        MySqlSource("mysql://root@h/db").fast_binlog
        and not MySqlSource("mysql://h/d", fast_binlog=False).fast_binlog
    )
    assert library._reader_settings().fast is False
    with pytest.raises(InvalidArgumentError, match="binlog must be"):
        MySqlUrl.parse("mysql://root@h/db?binlog=slow")


# --- where reading starts ----------------------------------------------------------------------------


class FakeCursor:
    """Answers the few queries :func:`resume_point` asks, from a dict of canned results."""

    def __init__(self, answers: Mapping[str, Sequence[Any] | None]) -> None:
        self.answers, self.row, self.asked = dict(answers), None, []  # type: ignore[var-annotated]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        key = sql if not params else f"{sql} {tuple(params)}"
        self.asked.append(key)
        self.row = self.answers[key]  # type: ignore[assignment]

    def fetchone(self) -> Any:
        return self.row


MARIADB = {
    "SELECT @@gtid_binlog_pos": ("0-1-50,1-1-9",),
    "SHOW MASTER STATUS": ("mysql-bin.000003", 900),
    "SELECT BINLOG_GTID_POS(%s, %s) ('mysql-bin.000003', 900)": ("0-1-50,1-1-9",),
    "SELECT BINLOG_GTID_POS(%s, %s) ('mysql-bin.000002', 400)": ("0-1-30,1-1-2",),
    "SELECT BINLOG_GTID_POS(%s, %s) ('mysql-bin.000001', 4)": (None,),
}


def start(
    answers: Mapping[str, Any],
    stored: Mapping[str, Mapping[str, Any]],
    *,
    by_gtid: bool = True,
    flavour: Any = "mariadb",
) -> tuple[Any, str | None]:
    at, gtids = resume_point(
        FakeCursor(answers),
        flavour=flavour,
        server="1",
        by_gtid=by_gtid,
        stored=stored,
        known=list(stored.values()),
    )
    return at, None if gtids is None else str(gtids)


def test_mariadb_resumes_from_the_meet_of_the_stored_states() -> None:
    stored: dict[str, dict[str, Any]] = {
        "db.a": {"file": "x", "pos": 1, "gtids": "0-1-40,1-1-9"},
        "db.b": {"gtids": "0-1-45,1-1-3"},
    }
    assert start(MARIADB, stored) == (None, "0-1-40,1-1-3")
    # nothing stored: the current end, by file/offset with the state there
    assert start(MARIADB, {}) == (("mysql-bin.000003", 900), "0-1-50,1-1-9")


def test_a_position_from_before_gtids_were_stored_is_converted_on_its_server() -> None:
    stored: dict[str, dict[str, Any]] = {
        "db.a": {"file": "mysql-bin.000002", "pos": 400},
        "db.b": {"gtids": "0-1-45,1-1-9"},
    }
    assert start(MARIADB, stored) == (None, "0-1-30,1-1-2")
    with pytest.raises(PositionError, match=r"db.a \(mysql-bin.000001:4\) is not in this server's binlog"):
        start(MARIADB, {"db.a": {"file": "mysql-bin.000001", "pos": 4}})


def test_a_server_behind_the_stored_state_is_refused() -> None:
    with pytest.raises(PositionError, match=r"lacks transactions that db.a already holds \(GTIDs 0-1-51;"):
        start(MARIADB, {"db.a": {"gtids": "0-1-51,1-1-9"}})


def test_file_and_offset_resume_refuses_another_servers_position() -> None:
    stored = {"db.a": {"file": "mysql-bin.000002", "pos": 400, "gtids": "0-1-30", "server": "1"}}
    assert start(MARIADB, stored, by_gtid=False) == (("mysql-bin.000002", 400), "0-1-30,1-1-2")
    stored["db.a"]["server"] = "7"
    with pytest.raises(PositionError, match="was read from server 7, this is server 1"):
        start(MARIADB, stored, by_gtid=False)


def test_mysql_without_gtids_resumes_by_file_and_offset() -> None:
    stored = {"db.a": {"file": "binlog.000004", "pos": 77}, "db.b": {"file": "binlog.000004", "pos": 9}}
    assert start({}, stored, flavour=None) == (("binlog.000004", 9), None)


def test_mysql_with_gtids() -> None:
    answers = {
        "SELECT @@gtid_executed": (f"{UUID_A}:1-100",),
        "SHOW MASTER STATUS": ("binlog.000004", 500, "", "", f"{UUID_A}:1-100"),
    }
    stored = {"db.a": {"gtids": f"{UUID_A}:1-60"}, "db.b": {"gtids": f"{UUID_A}:1-40:42-70"}}
    assert start(answers, stored, flavour="mysql") == (None, f"{UUID_A}:1-40:42-60")
    assert start(answers, {}, flavour="mysql") == (("binlog.000004", 500), f"{UUID_A}:1-100")
    # a file/offset-only position cannot be converted on MySQL: by file/offset, the state unknown
    legacy = {"db.a": {"file": "binlog.000004", "pos": 9}}
    assert start(answers, legacy, flavour="mysql") == (("binlog.000004", 9), None)
    assert start(answers, {}, flavour="mysql", by_gtid=False) == (("binlog.000004", 500), f"{UUID_A}:1-100")


def test_strict_gtid_mode_is_read_from_the_server() -> None:
    assert gtid_strict(FakeCursor({"SELECT @@gtid_strict_mode": (1,)}))
    assert not gtid_strict(FakeCursor({"SELECT @@gtid_strict_mode": (0,)}))


def test_stored_orders_answer_as_comparing_with_each_stored_order() -> None:
    from flowlake.cdc.mysql_gtid import StoredOrders

    rng = random.Random(11)
    for _ in range(300):
        states = [
            ",".join(
                f"{d}-{rng.randint(1, 3)}-{rng.randint(0, 20)}"
                for d in rng.sample(range(4), rng.randint(1, 3))
            )
            for _ in range(rng.randint(0, 3))
        ]
        orders = [(ResumeOrder(MariaDbGtids.parse(s), "b.000001", rng.randint(4, 99)),) for s in states]
        if rng.random() < 0.2:  # a position stored without a state: compared by file/offset
            orders.append((ResumeOrder(None, "b.000001", rng.randint(4, 99)),))
        stored = StoredOrders(orders)
        for _ in range(10):
            gtid = f"{rng.randrange(5)}-{rng.randint(1, 3)}-{rng.randint(0, 22)}"
            order = (ResumeOrder.of_transaction(gtid, "b.000001", rng.randint(4, 99)),)
            assert stored.holds(order) == any(order <= s for s in orders), (gtid, states)
