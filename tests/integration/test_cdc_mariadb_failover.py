"""Binlog CDC across a failover: ingest from a primary, kill -9, resume on its promoted replica.

The replica writes the same transactions into binlog files of its own at other offsets, so only
the GTID state stored with each ODS commit says where to resume there; a file/offset resume is
refused (it would read from the wrong place). The oracle is the replica itself: ``SELECT *`` for the
final state and the replicated audit table (filled by triggers on the primary) for each key's
history, as in ``test_cdc_mariadb.py``. Two replication domains are written, so the stored states
span domains.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from test_cdc_mariadb import (
    ORDER_COLUMNS,
    Writer,
    assert_ods_equals_source,
    audit_histories,
    connect,
    create_shop,
    fresh_database,
    key_histories,
    lake,
    position,
    snapshot_state,
    source_rows,
    wait_for,
)

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.mysql import MySqlSource
from flowlake.cdc.testing import mariadb_binaries
from flowlake.changelog import KIND_COLUMN
from flowlake.testing.services import ServiceUnavailableError
from harness.services import MariaDbPair, kill_running, require_service, running_mariadb_pair, stop_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("mariadb-failover"),
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]

pytest.importorskip("pymysql")
pytest.importorskip("pymysqlreplication")


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbPair]:
    """A primary and its GTID replica (see :func:`harness.services.running_mariadb_pair`)."""
    require_service(mariadb_binaries() is not None, "mariadb-install-db/mariadbd are not installed")
    try:
        with running_mariadb_pair(tmp_path_factory.mktemp("failover")) as servers:
            yield servers
    except ServiceUnavailableError as exc:  # pragma: no cover - depends on the machine
        require_service(False, str(exc))


class TwoDomainWriter(Writer):
    """The workload of ``test_cdc_mariadb``, each transaction in GTID domain 0 or 1."""

    def transaction(self) -> None:
        self.conn.cursor().execute("SET SESSION gtid_domain_id = %s", (self.rng.randrange(2),))
        super().transaction()


def test_resume_on_the_promoted_replica_after_kill_9_loses_and_duplicates_nothing(
    pair: MariaDbPair, tmp_path: Path, cpu_load: int
) -> None:
    primary, replica = pair.primary.url, pair.replica.url
    cur = connect(primary).cursor()
    create_shop(cur, 3000)
    initial = {r["id"]: r for r in source_rows(cur, "shop.orders", ORDER_COLUMNS)}
    catalog, warehouse = lake(tmp_path)
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    key = f"mysql://127.0.0.1:{pair.primary.port}"  # where the first ingester stores its positions
    log = tmp_path / "ingest.log"
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str, *extra: str, options: str = "") -> subprocess.Popen[bytes]:
        """``flowlake ingest --source <url>/shop<options>`` (as ``test_cdc_mariadb`` runs it)."""
        proc = start_ingester(url, catalog, warehouse, *extra, log=log, options=options)
        started.append(proc)
        return proc

    writer = TwoDomainWriter(primary, 3000, pause=0.01)
    try:
        first = start(primary)
        wait_for(lambda: bool(snapshot_state(cat, "ods.orders", key).get("done")), 180, "the snapshot")
        writer.start()
        streamed = position(cat, "ods.orders", key)
        wait_for(lambda: position(cat, "ods.orders", key) != streamed, 120, "a streamed commit")
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)  # mid-stream: the writer goes on
        first.wait(10)
        time.sleep(1.0)
        writer.finish()
        assert writer.transactions > 30
        killed_at = position(cat, "ods.orders", key)
        assert killed_at is not None and "gtids" in killed_at, killed_at

        # failover: the replica has everything, the primary goes away, the replica becomes the source
        pair.wait_for_replica()
        stop_server(pair.primary)
        pair.promote_replica()
        rcur = connect(replica).cursor()
        after = TwoDomainWriter(replica, writer.next_id, pause=0.0)
        after.rng.seed(11)
        for _ in range(40):
            after.transaction()
        after.conn.close()

        # the file/offset the primary's binlog gave is not that place in the replica's binlog
        rcur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (killed_at["file"], killed_at["pos"]))
        (there,) = rcur.fetchone()
        assert there != killed_at["gtids"], (killed_at, there)
        refused = start(replica, "--until-idle", options=f"?key={key}&gtid=off")
        assert refused.wait(120) != 0
        assert "was read from server 1, this is server 2" in " ".join(log.read_text().split())

        resumed = start(replica, "--until-idle", options=f"?key={key}")
        assert resumed.wait(240) == 0, log.read_text()[-3000:]
    finally:
        writer.stop.set()
        kill_running(started)

    text = log.read_text()
    assert "no dead letters in ods._dead_letter" in text
    # the resume re-read transactions some tables already held (ods.archive's state is older than
    # ods.orders'): held ones were skipped per table, by GTID, on a server with other offsets
    skipped = re.findall(r"\(([\d,]+) groups already committed, skipped\)", text)
    assert skipped and int(skipped[-1].replace(",", "")) > 0, text[-2000:]
    assert_ods_equals_source(cat, rcur)
    orders = cat.load_table("ods.orders")
    # every change the writers made is in ODS once, in order (the snapshot was done before they began)
    ods_history = key_histories(orders.changes(0))
    full = audit_histories(rcur, 0)
    assert full, "the writers made no change"
    for k, states in full.items():
        whole = ([initial[k]] if k in initial else []) + states
        assert ods_history.get(k, []) == whole, (
            f"key {k}: ODS went through {ods_history.get(k)}, MariaDB {whole}"
        )
    final = position(cat, "ods.orders", key)
    assert final is not None and final["server"] == "2"
    domains = {part.split("-")[0] for part in final["gtids"].split(",")}
    assert domains == {"0", "1"}, final


def start_ingester(
    url: str, catalog: str, warehouse: str, *extra: str, log: Path, options: str = ""
) -> subprocess.Popen[bytes]:
    """``test_cdc_mariadb.start_ingester`` with options on the source URL (``?key=...``)."""
    code = "import sys; from flowlake.cli.main import main; main(sys.argv[1:])"
    args = [
        "ingest", "--source", f"{url}/shop{options}", "--tables", "shop.*", "--namespace", "ods",
        "--catalog", catalog, "--warehouse", warehouse, "--chunk-size", "1000", "--max-rows", "1",
        "--catchup-rows", "1", "--max-latency-ms", "50", *extra,
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "120"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def test_a_position_stored_without_a_gtid_state_resumes(mariadb: str, tmp_path: Path) -> None:
    cur = fresh_database(mariadb, "legacy")
    cur.execute("CREATE TABLE legacy.t (id INT PRIMARY KEY, v INT)")
    cur.execute("CREATE TABLE legacy.u (id INT PRIMARY KEY, v INT)")
    cur.execute("INSERT INTO legacy.t VALUES (1, 1), (2, 2)")
    cur.execute("INSERT INTO legacy.u VALUES (1, 1)")
    cat = fl.connect(*lake(tmp_path))
    OdsIngester(cat, MySqlSource(f"{mariadb}/legacy")).run(until_idle=True)
    key = MySqlSource(f"{mariadb}/legacy").key
    for n, options in enumerate(("", "?gtid=off")):  # converted with BINLOG_GTID_POS; by file/offset
        for table in ("ods.t", "ods.u"):
            downgrade(cat.load_table(table), key)
        cur.execute("INSERT INTO legacy.t VALUES (%s, 0)", (10 + n,))
        cur.execute("UPDATE legacy.t SET v = v + 1")
        cur.execute("UPDATE legacy.u SET v = v + 1 WHERE id = 1")
        cur.execute("SELECT COUNT(*) FROM legacy.t")
        (rows,) = cur.fetchone()
        stats = OdsIngester(cat, MySqlSource(f"{mariadb}/legacy{options}")).run(until_idle=True)
        # each change once (an update is -U and +U): nothing lost, nothing applied twice
        assert stats.changes == 1 + 2 * rows + 2, (options, stats)
        for table, source in (("ods.t", "legacy.t"), ("ods.u", "legacy.u")):
            ods = cat.load_table(table)
            rows = sorted(ods.read().to_pylist(), key=lambda r: r["id"])
            assert rows == source_rows(cur, source, ["id", "v"]), (options, table)
            stored = position(cat, table, key)
            assert stored is not None and "gtids" in stored, stored  # a state is stored again


def downgrade(table: fl.LakeTable, key: str) -> None:
    """Commit the table's position as an older flowlake stored it: binlog file/offset only."""
    stored = table.source_position(key)
    assert isinstance(stored, dict) and "gtids" in stored, stored
    legacy = {k: v for k, v in stored.items() if k not in ("gtid", "gtids", "server")}
    kind = pa.field(KIND_COLUMN, pa.int8(), nullable=False)
    empty = pa.Table.from_batches([], pa.schema([*table.schema, kind]))
    table.apply(empty, token=f"legacy-{time.time_ns()}", sources={key: legacy})
    assert table.source_position(key) == legacy
