"""Chaos harness: run the whole shop pipeline as processes, SIGKILL random parts, then check every layer.

A :class:`ChaosRun` sets up a file warehouse and a SQLite catalog in a work folder and runs the demo
pipeline the way it runs in production, one process per component:

* a source writer (a thread) turning seeded :class:`~flowlake.demo.pipeline.ShopCdcGenerator`
  transactions into Debezium JSONL files, one file per transaction, each written atomically
  (temporary file, then rename) at a steady pace;
* the ODS ingester (``flowlake ingest --source debezium-jsonl``, follow mode);
* the three dataflows under bytewax with recovery, as ``flowlake run`` starts them
  (``python -m flowlake.flow.runner flowlake.flow.shop:<flow> -r DIR -s 0.5 -b 0``);
* periodic, short-lived compaction and cleaning processes over all pipeline tables
  (``python -m flowlake.testing.chaos maintain compact|clean``).

A killer thread, seeded by ``random.Random(seed)``, waits a random gap, picks a component (seeded bags
of all component kinds, so every kind is hit once before any is hit twice), and SIGKILLs its whole
process group at a random moment: a long-running component once it has run ``min_uptime`` seconds,
a maintenance process at a random fraction of its work. Killed long-running components are restarted
after a random down time; a killed maintenance process simply runs again at its next turn. Every
kill is recorded. Then the writer stops, the pipeline drains (the ingester reaches the last file,
every output's lineage reaches its inputs' heads), the processes stop gracefully, and the checks run.
Meanwhile a :class:`ChangelogAuditor` reads every table's changelog as it grows (as a registered
consumer, so cleaning never deletes what it has not read), which lets the checks cover each table's
whole history and not only what cleaning left:

* ``ods.orders`` / ``ods.shops`` equal the source database, column for column;
* every ODS commit stores a position at the end of a source transaction file, positions never go
  back, and the ODS changelog holds, per key, exactly the source's changes per commit
  (:func:`expected_changes`: one commit may hold several transactions when the ingester catches up,
  then a key gets their net change) — over the whole history and over the retained one, whose
  oldest snapshot must also equal the source at that position;
* every table's changelog is well formed per key (:func:`check_changelog`), over the whole history
  from version 0 and from the oldest retained version, and replays into exactly its head; the
  retained changelog equals what was read during the run;
* every DWD/DWS table caught up with its inputs and equals ``verify``'s batch recompute at head and at
  a few seeded earlier versions whose inputs are still readable;
* no component exited on its own, no dead letters, and no orphan or missing files after cleaning.

The seed fixes the source data and the kill schedule (which component, gaps, down times, where in
a maintenance run); process timing is not deterministic, so a replay lands kills at the same places
in the schedule, not at the same instructions. Replay with the command in :attr:`ChaosResult.replay`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import decimal
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.catalog.catalog import Catalog, connect
from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind

LONG_RUNNING: Final = ("ingester", "dwd_orders", "dws_shop_minute", "dws_city_day")
"""Components that run all the time and are restarted after a kill."""
MAINTENANCE: Final = ("compaction", "cleaning")
"""Short-lived components started periodically."""
COMPONENTS: Final = (*LONG_RUNNING, *MAINTENANCE)
FLOWS: Final = {
    "dwd_orders": "flowlake.flow.shop:dwd_orders_flow",
    "dws_shop_minute": "flowlake.flow.shop:dws_shop_minute_flow",
    "dws_city_day": "flowlake.flow.shop:dws_city_day_flow",
}
OUTPUTS: Final = {
    "dwd.orders_enriched": ("ods.orders", "ods.shops"),
    "dws.shop_gmv_minute": ("dwd.orders_enriched",),
    "dws.city_day": ("dws.shop_gmv_minute", "ods.shops"),
}
"""Each verified output and the inputs its lineage must reach."""
ODS: Final = {"orders": "ods.orders", "shops": "ods.shops"}
"""Source table → ODS table."""
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_READY: Final = "chaos-maintain ready"
_CLI: Final = "import sys; from flowlake.cli.main import main; sys.exit(main())"
"""The ``flowlake`` command (``python -m flowlake.cli.main`` would not register the subcommands)."""
_MAX_EXITS: Final = 20
"""Unexpected exits after which a run gives up."""
Key = tuple[Any, ...]
"""A primary-key value as a tuple of its columns' values."""
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """What a chaos run does; the defaults are CI-sized (a minute or so on two cores)."""

    seed: int = 1
    kills: int = 12
    kill_gap: tuple[float, float] = (1.5, 4.5)
    """Seconds between one kill and the next (uniform)."""
    min_uptime: float = 1.5
    """A long-running component is killed only after it ran this long since its last start."""
    down_time: tuple[float, float] = (0.0, 1.5)
    """Seconds a killed long-running component stays down (uniform)."""
    min_duration: float = 0.0
    """Keep the chaos phase going at least this long, even when the kills are done."""
    tx_per_second: float = 5.0
    changes_per_tx: int = 12
    initial_orders: int = 1000
    shops: int = 30
    snapshot_interval: float = 0.5
    """``-s``: seconds per epoch (and sink commit) of the dataflows."""
    maintenance_every: tuple[float, float] = (3.0, 7.0)
    """Seconds between two runs of each maintenance kind (uniform)."""
    retain_last: int = 3
    slow_writes: float = 0.2
    """Seconds each file a compaction process writes is held open (see :func:`_slow_writes`)."""
    orphan_grace: float = 20.0
    """Cleaning's grace period for orphan files (seconds)."""
    drain_timeout: float = 120.0
    verify_samples: int = 3
    """Earlier versions of each output verified besides the head (seeded choice)."""


@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL: which component, when (seconds from the start), and what it was doing."""

    component: str
    at: float
    pid: int
    uptime: float
    doing: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One end-of-run check."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class ChaosResult:
    """What a chaos run did and found."""

    seed: int
    config: ChaosConfig
    workdir: Path
    kills: list[Kill] = field(default_factory=list)
    transactions: int = 0
    source_changes: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``{table: (oldest readable version, head)}`` at the end."""
    checks: list[Check] = field(default_factory=list)
    rows_lost: int = 0
    rows_duplicated: int = 0
    wall_seconds: float = 0.0
    log_tails: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    @property
    def kills_by_component(self) -> dict[str, int]:
        """Kills per component kind (every kind listed, zero included)."""
        counts = Counter(k.component for k in self.kills)
        return {c: counts.get(c, 0) for c in COMPONENTS}

    @property
    def replay(self) -> str:
        """The command that replays this run's seed and schedule."""
        return "python -m flowlake.testing.chaos run " + " ".join(_config_args(self.config))

    def summary(self) -> str:
        """A readable report; on failure it names the seed, the replay command and the logs' tails."""
        kills = ", ".join(f"{c} {n}" for c, n in self.kills_by_component.items())
        lines = [
            f"chaos run seed={self.seed}: {len(self.kills)} kills ({kills}) in {self.wall_seconds:.1f}s",
            f"source: {self.transactions:,} transactions, {self.source_changes:,} changes",
            *(
                f"  {name:<26} {rows:>8,} rows  versions {self.versions.get(name, (0, 0))[0]}.."
                f"{self.versions.get(name, (0, 0))[1]}"
                for name, rows in self.rows.items()
            ),
            f"rows lost: {self.rows_lost}, rows duplicated: {self.rows_duplicated}",
            f"checks: {sum(c.ok for c in self.checks)} passed, {len(self.failures)} failed",
        ]
        for check in self.checks:
            lines.append(f"  ok      {check.name}" if check.ok else f"  FAILED  {check.name}: {check.detail}")
        if not self.ok:
            lines.append(f"seed {self.seed}; replay: {self.replay}")
            lines.append(f"work folder (logs, catalog, warehouse): {self.workdir}")
            for name, tail in self.log_tails.items():
                lines.append(f"--- tail of {name}.log ---\n{tail}")
        return "\n".join(lines)


def _config_args(config: ChaosConfig) -> list[str]:
    args = []
    for f in fields(ChaosConfig):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return args


# -- the kill schedule ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedKill:
    """One entry of the seeded schedule."""

    component: str
    gap: float
    """Seconds after the previous kill."""
    down: float
    """Seconds a long-running component stays down."""
    fraction: float
    """Where in a maintenance run's work the kill lands (0..1)."""


def kill_plan(config: ChaosConfig) -> list[PlannedKill]:
    """The seeded schedule: bags of every component kind in random order, random gaps and moments."""
    rng = random.Random(config.seed)  # noqa: S311 - seeded chaos, not security
    order: list[str] = []
    while len(order) < config.kills:
        bag = list(COMPONENTS)
        rng.shuffle(bag)
        order += bag
    return [
        PlannedKill(c, rng.uniform(*config.kill_gap), rng.uniform(*config.down_time), rng.random())
        for c in order[: config.kills]
    ]


# -- the source --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceChange:
    """One source change as ODS rows: ``op`` is Debezium's (``r``, ``c``, ``u``, ``d``)."""

    table: str
    key: Key
    op: str
    before: Row | None
    after: Row | None


def _ods_row(table: str, image: Mapping[str, Any]) -> Row:
    if table != "orders":
        return dict(image)
    row = dict(image)
    cents = int.from_bytes(base64.b64decode(row["amount"]), "big", signed=True)
    row["amount"] = decimal.Decimal(cents).scaleb(-2)
    for column in ("created_at", "updated_at"):
        row[column] = _EPOCH + dt.timedelta(microseconds=int(row[column]))
    return row


def parse_transaction(lines: Iterable[bytes]) -> list[SourceChange]:
    """Debezium JSON lines of the demo generator as :class:`SourceChange` values."""
    out = []
    for line in lines:
        event = orjson.loads(line)
        table = event["source"]["table"]
        before = _ods_row(table, event["before"]) if event["before"] else None
        after = _ods_row(table, event["after"]) if event["after"] else None
        image = after if after is not None else before
        assert image is not None
        key = (image["order_id"] if table == "orders" else image["shop_id"],)
        out.append(SourceChange(table, key, event["op"], before, after))
    return out


class SourceWriter(threading.Thread):
    """Write seeded source transactions as JSONL files (one per transaction, atomically) at a pace."""

    def __init__(self, folder: Path, config: ChaosConfig) -> None:
        super().__init__(name="chaos-source", daemon=True)
        from flowlake.demo.pipeline import ShopCdcGenerator

        self.folder, self.config = folder, config
        self.staging = folder.parent / (folder.name + "-staging")
        self.generator = ShopCdcGenerator(shops=config.shops, seed=config.seed)
        self.transactions: list[list[SourceChange]] = []
        """Transaction index → its changes; index 0 is the initial snapshot."""
        self.stop = threading.Event()
        self._last_now = _EPOCH

    def file_name(self, index: int) -> str:
        """The JSONL file of transaction ``index``."""
        return f"{index:08d}.jsonl"

    def _now(self) -> dt.datetime:
        now = max(dt.datetime.now(dt.UTC), self._last_now + dt.timedelta(milliseconds=1))
        self._last_now = now
        return now

    def _write(self, lines: list[bytes]) -> None:
        index = len(self.transactions)
        self.staging.mkdir(parents=True, exist_ok=True)
        tmp = self.staging / self.file_name(index)
        with tmp.open("wb") as f:
            f.write(b"\n".join(lines) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.folder / self.file_name(index))
        self.transactions.append(parse_transaction(lines))

    def write_snapshot(self) -> None:
        """Write the initial snapshot (every shop, ``initial_orders`` orders) as transaction 0."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(self.generator.snapshot(self.config.initial_orders, self._now()))

    def run(self) -> None:
        """Write a transaction every ``1 / tx_per_second`` seconds until :attr:`stop` is set."""
        period = 1.0 / self.config.tx_per_second
        due = time.monotonic()
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            tx = f"tx-{len(self.transactions)}"
            self._write(self.generator.transaction(self.config.changes_per_tx, self._now(), tx))
            due += period

    @property
    def changes(self) -> int:
        """Source changes written so far."""
        return sum(len(t) for t in self.transactions)


# -- checks ------------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def same_row(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Rows equal column by column (NaN equals NaN); None equals only None."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(_same(a[c], b[c]) for c in a)


def keyed_rows(table: pa.Table, primary_key: Sequence[str]) -> tuple[dict[Key, Row], list[Key]]:
    """``({key: row}, keys seen more than once)``."""
    rows: dict[Key, Row] = {}
    twice: list[Key] = []
    for row in table.to_pylist():
        key = tuple(row[k] for k in primary_key)
        if key in rows:
            twice.append(key)
        rows[key] = row
    return rows, twice


@dataclass
class _Replay:
    """Replays a changelog per key onto a snapshot, noting every change that does not fit."""

    state: dict[Key, Row]
    problems: list[str] = field(default_factory=list)
    pending: dict[Key, int] = field(default_factory=dict)
    """Keys whose ``-U`` waits for its ``+U``, with the version of the ``-U``."""
    touched: set[tuple[int, Key]] = field(default_factory=set)

    def apply(self, kind: RowKind, key: Key, version: int, row: Row) -> None:
        where = f"{kind.symbol} {key} in version {version}"
        if kind is not RowKind.UPDATE_AFTER:
            if key in self.pending:
                self.problems.append(f"-U of {key} in version {self.pending.pop(key)} has no +U after it")
            if (version, key) in self.touched:
                self.problems.append(f"{where}: the key already changed in this commit")
            self.touched.add((version, key))
        current = self.state.get(key)
        if kind is RowKind.INSERT or kind is RowKind.UPDATE_AFTER:
            if kind is RowKind.UPDATE_AFTER and self.pending.pop(key, None) != version:
                self.problems.append(f"{where}: no -U of the key right before it in the same commit")
            if current is not None:
                self.problems.append(f"{where}: the key is already present ({current}); a duplicated change")
            self.state[key] = row
            return
        if current is None:
            self.problems.append(f"{where}: the key is absent; a duplicated retraction or a missing insert")
        elif not same_row(current, row):
            self.problems.append(f"{where}: before-image {row} is not the current row {current}")
        self.state.pop(key, None)
        if kind is RowKind.UPDATE_BEFORE:
            self.pending[key] = version


def check_changelog(
    snapshot: pa.Table,
    changes: pa.Table,
    primary_key: Sequence[str],
    head: pa.Table | None = None,
    *,
    limit: int = 10,
) -> list[str]:
    """Problems of a table's changelog replayed per key onto ``snapshot`` (empty if none).

    Each change must fit the state it lands on: ``+I`` only for an absent key; ``-U`` and ``-D`` only
    for a present key, with a before-image equal to its current row; ``+U`` right after the key's
    ``-U`` in the same commit; a key changes at most once per commit. With ``head``, the replay must
    end with exactly its rows. A duplicated change breaks the first rule or the before-images; a
    missing one breaks a later before-image or the final comparison.
    """
    state, twice = keyed_rows(snapshot, primary_key)
    replay = _Replay(state, [f"snapshot holds key {k} twice" for k in twice])
    columns = [c for c in changes.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)]
    has_seq = SEQ_COLUMN in changes.column_names
    if has_seq:
        changes = changes.sort_by(SEQ_COLUMN)
    seqs = changes.column(SEQ_COLUMN).to_pylist() if has_seq else [0] * changes.num_rows
    kinds = changes.column(KIND_COLUMN).to_pylist()
    for seq, kind, row in zip(seqs, kinds, changes.select(columns).to_pylist(), strict=True):
        replay.apply(RowKind(kind), tuple(row[k] for k in primary_key), seq >> 32, row)
    problems = replay.problems
    problems += [f"-U of {k} in version {v} has no +U after it" for k, v in replay.pending.items()]
    if head is not None:
        final, _ = keyed_rows(head, primary_key)
        for key in sorted(set(final) | set(state), key=repr):
            if not same_row(final.get(key), state.get(key)):
                problems.append(
                    f"replaying the log gives {state.get(key)} for {key}, the head has {final.get(key)}"
                )
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems


Change = tuple[int, int, Row]
"""One change of a key: ``(version, kind, row)``."""


def changelog_by_key(changes: pa.Table, primary_key: Sequence[str]) -> dict[Key, list[Change]]:
    """``{key: [(version, kind, row), ...]}`` in commit order."""
    if SEQ_COLUMN in changes.column_names:
        changes = changes.sort_by(SEQ_COLUMN)
        versions = [seq >> 32 for seq in changes.column(SEQ_COLUMN).to_pylist()]
    else:
        versions = [0] * changes.num_rows
    kinds = changes.column(KIND_COLUMN).to_pylist()
    columns = [c for c in changes.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)]
    out: dict[Key, list[Change]] = defaultdict(list)
    for version, kind, row in zip(versions, kinds, changes.select(columns).to_pylist(), strict=True):
        out[tuple(row[k] for k in primary_key)].append((version, int(kind), row))
    return out


def source_state(transactions: Iterable[Sequence[SourceChange]], table: str) -> dict[Key, Row]:
    """A source table's rows after ``transactions``."""
    state: dict[Key, Row] = {}
    for tx in transactions:
        for c in tx:
            if c.table == table:
                if c.after is None:
                    state.pop(c.key, None)
                else:
                    state[c.key] = c.after
    return state


def expected_changes(
    transactions: Sequence[Sequence[SourceChange]], table: str, commits: Iterable[tuple[int, int]]
) -> dict[Key, list[Change]]:
    """The exact changelog an ODS table must hold, per key.

    ``commits`` are ``(version, cut)`` in version order: that version holds the source transactions
    up to index ``cut`` (its stored position). Each commit holds, for every key that its new
    transactions touched, the net change from the key's state before them to its state after them:
    one source change when a commit holds one transaction, and fewer when an ingester catching up
    puts several transactions into one commit (a key inserted then updated is one ``+I``).
    """
    state: dict[Key, Row] = {}
    done = -1
    out: dict[Key, list[Change]] = defaultdict(list)
    for version, cut in commits:
        before: dict[Key, Row | None] = {}
        for tx in transactions[done + 1 : cut + 1]:
            for c in tx:
                if c.table == table:
                    before.setdefault(c.key, state.get(c.key))
                    if c.after is None:
                        state.pop(c.key, None)
                    else:
                        state[c.key] = c.after
        done = max(done, cut)
        for key, old in before.items():
            new = state.get(key)
            if old is None and new is not None:
                out[key].append((version, int(RowKind.INSERT), new))
            elif old is not None and new is None:
                out[key].append((version, int(RowKind.DELETE), old))
            elif old is not None and new is not None and not same_row(old, new):
                out[key] += [
                    (version, int(RowKind.UPDATE_BEFORE), old),
                    (version, int(RowKind.UPDATE_AFTER), new),
                ]
    return out


def compare_changes(
    expected: Mapping[Key, Sequence[Change]], actual: Mapping[Key, Sequence[Change]], *, limit: int = 10
) -> tuple[list[str], int, int]:
    """``(problems, changes missing, changes duplicated)``: per key, actual must equal expected."""
    problems: list[str] = []
    missing = duplicated = 0

    def fingerprint(change: Change) -> tuple[Any, ...]:
        return (change[0], change[1], *sorted(change[2].items()))

    def symbols(changes: Sequence[Change]) -> str:
        return " ".join(f"{RowKind(k).symbol}@{v}" for v, k, _ in changes)

    for key in sorted(set(expected) | set(actual), key=repr):
        want, got = list(expected.get(key, ())), list(actual.get(key, ()))
        if len(want) == len(got) and all(
            w[:2] == g[:2] and same_row(w[2], g[2]) for w, g in zip(want, got, strict=True)
        ):
            continue
        lacking = Counter(map(fingerprint, want)) - Counter(map(fingerprint, got))
        extra = Counter(map(fingerprint, got)) - Counter(map(fingerprint, want))
        missing += sum(lacking.values())
        duplicated += sum(extra.values())
        what = (
            f"{sum(lacking.values())} missing, {sum(extra.values())} extra"
            if lacking or extra
            else "reordered"
        )
        problems.append(f"key {key}: {what}; source [{symbols(want)}], log [{symbols(got)}]")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more keys"]
    return problems, missing, duplicated


def compare_rows(
    expected: Mapping[Key, Row], actual: Mapping[Key, Row], *, limit: int = 10
) -> tuple[list[str], int, int]:
    """``(problems, rows missing, rows extra)`` of a table against the rows it must hold."""
    problems: list[str] = []
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    differ = [k for k in expected if k in actual and not same_row(expected[k], actual[k])]
    problems += [f"missing {k}: {expected[k]}" for k in missing[:limit]]
    problems += [f"extra {k}: {actual[k]}" for k in extra[:limit]]
    problems += [f"differs {k}: source {expected[k]}, table {actual[k]}" for k in differ[:limit]]
    return problems, len(missing), len(extra)


class ChangelogAuditor:
    """Read every table's changelog while the pipeline runs, as a registered consumer.

    Cleaning keeps every version from the oldest consumer position on, so the auditor sees each
    table's whole history from version 0 while cleaning keeps deleting what it has read.
    """

    name: Final = "chaos-auditor"

    def __init__(self, catalog: Catalog, tables: Sequence[str]) -> None:
        self.catalog = catalog
        self.position = dict.fromkeys(tables, 0)
        self.parts: dict[str, list[pa.Table]] = {}
        for table in tables:
            t = catalog.load_table(table)
            self.parts[table] = [t.changes(0, 0)]
            catalog.register_consumer(self.name, table, 0)

    def poll(self) -> None:
        """Read what each table committed since the last poll, then move the consumer there."""
        for table, position in self.position.items():
            t = self.catalog.load_table(table)
            if t.version > position:
                self.parts[table].append(t.changes(position, t.version))
                self.position[table] = t.version
                self.catalog.register_consumer(self.name, table, t.version)

    def changes(self, table: str) -> pa.Table:
        """Every change ``table`` committed from version 0 to the last poll."""
        return pa.concat_tables(self.parts[table])


# -- processes ---------------------------------------------------------------------------------------


class Component:
    """One component: its command, its current process (in its own process group) and its log."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> None:
        self.name, self.argv, self.env, self.log, self.cwd = name, list(argv), dict(env), log, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.starts = 0
        self.mark = 0
        self.killed = False
        self.reaped = True
        self.restart_at: float | None = None
        self.next_run = 0.0
        self.wanted = True
        """Whether the supervisor keeps it running (False once stopped on purpose)."""

    def start(self) -> None:
        """Start a new process, appending its output to the log."""
        self.mark = self.log.stat().st_size if self.log.exists() else 0
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"=== start #{self.starts} at {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and argv
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                start_new_session=True,
            )  # fmt: skip
        self.started_at = time.monotonic()
        self.killed, self.reaped, self.restart_at = False, False, None

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def uptime(self) -> float:
        """Seconds since its last start."""
        return time.monotonic() - self.started_at

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the process group and reap the process."""
        if self.proc is None:
            return
        self.killed = True
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, signum: int, timeout: float) -> int | None:
        """Ask the group to stop; its exit code, or None if it had to be killed after ``timeout``."""
        self.wanted = False
        if not self.running or self.proc is None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def output(self) -> str:
        """What the current process wrote so far."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(self.mark)
            return f.read().decode(errors="replace")

    def tail(self, chars: int = 2500) -> str:
        """The end of the log."""
        if not self.log.exists():
            return ""
        data = self.log.read_bytes()[-chars:]
        return data.decode(errors="replace")


# -- the run -----------------------------------------------------------------------------------------


class ChaosRun:
    """One chaos run in ``workdir`` (see the module docs); :meth:`run` returns a :class:`ChaosResult`."""

    def __init__(
        self, workdir: Path, config: ChaosConfig, *, say: Callable[[str], None] | None = None
    ) -> None:
        self.workdir, self.config = workdir, config
        self._say_to = say
        self.catalog_url = f"sqlite:///{workdir / 'catalog.db'}"
        self.warehouse = (workdir / "warehouse").as_uri()
        self.cdc = workdir / "cdc"
        self.source = SourceWriter(self.cdc, config)
        self.result = ChaosResult(config.seed, config, workdir)
        self.components: dict[str, Component] = {}
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._maintain = True
        self._rng = random.Random(config.seed + 1)  # noqa: S311 - seeded chaos
        self._work_seconds = dict.fromkeys(MAINTENANCE, 0.5)
        self._exits: list[str] = []
        self._started = time.monotonic()
        self.auditor: ChangelogAuditor | None = None
        self._audited = 0.0
        self._catalog_cache: Catalog | None = None

    def say(self, message: str) -> None:
        """Report progress (with the time since the start)."""
        if self._say_to is not None:
            self._say_to(f"[chaos {time.monotonic() - self._started:6.1f}s] {message}")

    # -- setup -----------------------------------------------------------------------------------------

    def _catalog(self) -> Catalog:
        if self._catalog_cache is None:
            self._catalog_cache = connect(catalog=self.catalog_url, warehouse=self.warehouse)
        return self._catalog_cache

    def _setup(self) -> None:
        from bytewax.recovery import init_db_dir

        from flowlake.flow.shop import TABLES, ensure_tables

        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        ensure_tables(self._catalog())
        self.auditor = ChangelogAuditor(self._catalog(), list(TABLES))
        self.source.write_snapshot()
        env = {
            **os.environ, "FLOWLAKE_CATALOG": self.catalog_url, "FLOWLAKE_WAREHOUSE": self.warehouse,
            "FLOWLAKE_FLOW_POLL": "0.2", "FLOWLAKE_LOG": "info", "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        env.pop("FLOWLAKE_FLOW_STOP", None)
        py = sys.executable
        argv: dict[str, list[str]] = {
            "ingester": [py, "-c", _CLI, "ingest", "--source", "debezium-jsonl", self.cdc.as_uri()],
            "compaction": [py, "-m", "flowlake.testing.chaos", "maintain", "compact",
                           "--slow-writes", str(self.config.slow_writes)],
            "cleaning": [py, "-m", "flowlake.testing.chaos", "maintain", "clean",
                         "--retain-last", str(self.config.retain_last),
                         "--orphan-grace", str(self.config.orphan_grace)],
        }  # fmt: skip
        for name, target in FLOWS.items():
            recovery = self.workdir / "recovery" / name
            recovery.mkdir(parents=True)
            init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
            s = str(self.config.snapshot_interval)
            argv[name] = [py, "-m", "flowlake.flow.runner", target, "-r", str(recovery), "-s", s, "-b", "0"]
        for name in COMPONENTS:
            log = self.workdir / "logs" / f"{name}.log"
            self.components[name] = Component(name, argv[name], env, log, self.workdir)

    # -- supervision -------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        """One round: restart what is due, note unexpected exits, run maintenance when due, audit."""
        now = time.monotonic()
        if self.auditor is not None and now - self._audited >= 2.0:
            self.auditor.poll()
            self._audited = now
        with self._lock:
            for name in LONG_RUNNING:
                c = self.components[name]
                if c.running or c.proc is None or not c.wanted:
                    continue
                if c.restart_at is None and not c.reaped:
                    self._unexpected(c)
                    c.restart_at = now + 1.0
                c.reaped = True
                if c.restart_at is not None and now >= c.restart_at:
                    c.start()
            for name in MAINTENANCE:
                c = self.components[name]
                if c.proc is not None and not c.running and not c.reaped:
                    c.reaped = True
                    if not c.killed and c.proc.returncode != 0:
                        self._unexpected(c)
                    elif not c.killed:
                        self._learn_work_time(c)
                if self._maintain and not c.running and now >= c.next_run:
                    c.start()
                    c.next_run = now + self._rng.uniform(*self.config.maintenance_every)

    def _unexpected(self, c: Component) -> None:
        code = c.proc.returncode if c.proc is not None else None
        self._exits.append(f"{c.name} exited on its own with code {code}:\n{c.output()[-2000:]}")
        self.say(f"{c.name} exited on its own with code {code}")

    def _learn_work_time(self, c: Component) -> None:
        for line in reversed(c.output().splitlines()):
            if line.startswith("done in "):
                seconds = float(line.split()[2].rstrip("s"))
                self._work_seconds[c.name] = 0.5 * self._work_seconds[c.name] + 0.5 * seconds
                return

    def _supervise_until(self, done: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._supervise()
            if done():
                return True
            time.sleep(0.1)
        self.say(f"{what}: not reached within {timeout:.0f}s")
        return False

    # -- the killer --------------------------------------------------------------------------------------

    def _killer(self, plan: Sequence[PlannedKill]) -> None:
        for planned in plan:
            if self._abort.wait(planned.gap):
                return
            if planned.component in MAINTENANCE:
                self._kill_maintenance(planned)
            else:
                self._kill_long_running(planned)

    def _record(self, c: Component, doing: str) -> None:
        assert c.proc is not None
        kill = Kill(c.name, round(time.monotonic() - self._started, 2), c.proc.pid, round(c.uptime, 2), doing)
        self.result.kills.append(kill)
        self.say(f"kill #{len(self.result.kills)}: {c.name} (pid {kill.pid}, up {kill.uptime:.1f}s) {doing}")

    def _kill_long_running(self, planned: PlannedKill) -> None:
        c = self.components[planned.component]
        deadline = time.monotonic() + 60
        while not self._abort.is_set():
            if time.monotonic() > deadline:
                self.say(f"{c.name} did not stay up {self.config.min_uptime}s within 60s: kill skipped")
                return
            with self._lock:
                if c.running and c.uptime >= self.config.min_uptime:
                    c.kill()
                    self._record(c, "")
                    c.restart_at = time.monotonic() + planned.down
                    return
            time.sleep(0.05)

    def _kill_maintenance(self, planned: PlannedKill) -> None:
        """Kill a maintenance run at ``planned.fraction`` of its work (retrying if it finished first)."""
        c = self.components[planned.component]
        for attempt in range(10):
            with self._lock:
                if not c.running:
                    c.start()
            while not self._abort.is_set() and c.running and _READY not in c.output():
                time.sleep(0.005)
            if self._abort.is_set():
                return
            time.sleep(planned.fraction * self._work_seconds[c.name] / (attempt + 1))
            with self._lock:
                lines = [x for x in c.output().splitlines() if x.strip()]
                if c.running and lines and not lines[-1].startswith("done in"):
                    c.kill()
                    self._record(c, f"during '{lines[-1].strip()}'")
                    return
            if c.proc is not None:
                c.proc.wait()  # it finished its work first: let it exit, try again
        self.say(f"{c.name} always finished before its kill: kill skipped")

    # -- phases ------------------------------------------------------------------------------------------

    def _chaos(self) -> None:
        plan = kill_plan(self.config)
        self.say(f"seed {self.config.seed}: {len(plan)} kills planned: {[p.component for p in plan]}")
        with self._lock:
            for name in LONG_RUNNING:
                self.components[name].start()
        self.source.start()
        killer = threading.Thread(target=self._killer, args=(plan,), name="chaos-killer", daemon=True)
        killer.start()
        while killer.is_alive() or time.monotonic() - self._started < self.config.min_duration:
            self._supervise()
            if len(self._exits) > _MAX_EXITS:
                self.say(f"giving up: {len(self._exits)} unexpected exits")
                self._abort.set()
                break
            time.sleep(0.05)
        self.source.stop.set()
        self.source.join()
        self.say(
            f"chaos done: {len(self.result.kills)} kills; source wrote {len(self.source.transactions)} files"
        )

    def _ingested_all(self) -> bool:
        last = len(self.source.transactions) - 1
        size = (self.cdc / self.source.file_name(last)).stat().st_size
        position = self._catalog().load_table("ods.orders").source_position(f"jsonl:{self.cdc.as_uri()}")
        if not isinstance(position, dict):
            return False
        return (
            Path(str(position.get("file", ""))).name == self.source.file_name(last)
            and position.get("offset") == size
        )

    def _caught_up(self) -> bool:
        cat = self._catalog()
        for name, inputs in OUTPUTS.items():
            out = cat.load_table(name)
            for source in inputs:
                if out.source_position(f"table:{source}") != cat.load_table(source).version:
                    return False
        return True

    def _drain(self) -> bool:
        self._maintain = False
        self.say("draining: maintenance off, waiting for the ingester to reach the last file")
        for name in MAINTENANCE:
            c = self.components[name]
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(30)
        if not self._supervise_until(self._ingested_all, self.config.drain_timeout, "ingester drained"):
            return False
        with self._lock:
            code = self.components["ingester"].stop(signal.SIGTERM, 30)
        self.result.checks.append(
            Check("the ingester stops cleanly on SIGTERM", code == 0, f"exit code {code}")
        )
        self.say("waiting for every output's lineage to reach its inputs' heads")
        if not self._supervise_until(self._caught_up, self.config.drain_timeout, "outputs caught up"):
            return False
        time.sleep(2 * self.config.snapshot_interval + 0.5)
        with self._lock:
            for name in FLOWS:
                code = self.components[name].stop(signal.SIGINT, 15)
                self.say(f"stopped {name} (exit code {code})")
        return True

    def check(self) -> list[Check]:
        """Run the end-of-run checks on the stopped pipeline (again, if you like) and return them.

        Also sets the result's rows, versions and rows lost / duplicated.
        """
        scratch = ChaosResult(self.config.seed, self.config, self.workdir)
        _Checker(self, scratch).run()
        self.result.rows, self.result.versions = scratch.rows, scratch.versions
        self.result.rows_lost, self.result.rows_duplicated = scratch.rows_lost, scratch.rows_duplicated
        return scratch.checks

    def run(self) -> ChaosResult:
        """Set up, run the chaos phase, drain, stop everything and check; never leaves processes behind."""
        started = time.monotonic()
        previous = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM still stops the processes
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self._setup()
            self._chaos()
            drained = not self._abort.is_set() and self._drain()
        finally:
            self._abort.set()
            self.source.stop.set()
            with self._lock:
                for c in self.components.values():
                    if c.running:
                        c.kill()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.result.transactions = len(self.source.transactions)
        self.result.source_changes = self.source.changes
        what = "pipeline drained: the ingester read the last file, every output reached its inputs' heads"
        self.result.checks.append(Check(what, drained, ""))
        self.result.checks.append(
            Check("no component exited on its own", not self._exits, "\n".join(self._exits))
        )
        self.say("checking")
        self.result.checks += self.check()
        self.result.wall_seconds = round(time.monotonic() - started, 1)
        if not self.result.ok:
            self.result.log_tails = {name: c.tail() for name, c in self.components.items()}
        self.say(f"done: {'all checks passed' if self.result.ok else 'FAILED'}")
        return self.result


class _Checker:
    """The end-of-run checks over a stopped pipeline."""

    def __init__(self, run: ChaosRun, result: ChaosResult) -> None:
        self.run_, self.result = run, result
        self.catalog = run._catalog()
        self.rng = random.Random(run.config.seed + 2)  # noqa: S311 - seeded chaos

    def add(self, name: str, problems: Sequence[str]) -> None:
        self.result.checks.append(Check(name, not problems, "; ".join(problems)))

    def run(self) -> None:
        from flowlake.flow.shop import TABLES

        for name in TABLES:
            t = self.catalog.load_table(name)
            self.result.rows[name] = t.read(columns=list(t.primary_key)).num_rows
            self.result.versions[name] = (t.oldest_version, t.version)
        if self.run_.auditor is not None:
            self.run_.auditor.poll()
        for table, name in ODS.items():
            self._ods(table, name)
        for name in TABLES:
            self._well_formed(name)
            self._audited(name)
        for name in OUTPUTS:
            self._verify(name)
        self._dead_letters()
        self._orphans()

    def _positions(self, name: str) -> tuple[list[tuple[int, int]], list[str]]:
        """``(version, cut)`` of every commit storing a source position, and problems with them.

        ``cut`` is the index of the last source transaction the version holds (-1: none).
        """
        key = f"jsonl:{self.run_.cdc.as_uri()}"
        commits: list[tuple[int, int]] = []
        problems = []
        for commit in self.catalog.load_table(name).history():
            position = commit.summary.get("sources", {}).get(key)
            if not isinstance(position, dict):
                continue
            file = Path(str(position.get("file") or "")).name
            cut = int(file.split(".")[0]) if file else -1
            path = self.run_.cdc / file
            if file and (not path.is_file() or position.get("offset") != path.stat().st_size):
                problems.append(f"version {commit.version} stores a position inside {file}: {position}")
            if commits and cut < commits[-1][1]:
                problems.append(
                    f"version {commit.version} stores a position before version {commits[-1][0]}'s"
                )
            commits.append((commit.version, cut))
        return commits, problems

    def _ods(self, table: str, name: str) -> None:
        t = self.catalog.load_table(name)
        key = list(t.primary_key)
        transactions = self.run_.source.transactions
        final = source_state(transactions, table)
        actual, _ = keyed_rows(t.read(), key)
        problems, lost, extra = compare_rows(final, actual)
        self.result.rows_lost += lost
        self.result.rows_duplicated += extra
        self.add(f"{name} equals the source ({len(final):,} rows)", problems)
        commits, problems = self._positions(name)
        self.add(f"{name}: {len(commits)} commits store whole-transaction positions, in order", problems)
        want = expected_changes(transactions, table, commits)
        count = sum(len(v) for v in want.values())
        if self.run_.auditor is not None:
            audited = changelog_by_key(self.run_.auditor.changes(name), key)
            problems, lost, duplicated = compare_changes(want, audited)
            self.result.rows_lost += lost
            self.result.rows_duplicated += duplicated
            self.add(
                f"{name} whole changelog 0..{t.version} is the source's changes ({count:,}) per commit",
                problems,
            )
        oldest = t.oldest_version
        cut = max([c for v, c in commits if v <= oldest], default=-1)
        snapshot, _ = keyed_rows(t.read(version=oldest), key)
        problems, _, _ = compare_rows(source_state(transactions[: cut + 1], table), snapshot)
        self.add(f"{name}@{oldest} (oldest) equals the source after transaction {cut}", problems)
        retained = {k: [c for c in v if c[0] > oldest] for k, v in want.items()}
        problems, _, _ = compare_changes(
            {k: v for k, v in retained.items() if v}, changelog_by_key(t.changes(oldest), key)
        )
        self.add(
            f"{name} retained changelog {oldest}..{t.version} is the source's changes per commit", problems
        )

    def _well_formed(self, name: str) -> None:
        t = self.catalog.load_table(name)
        oldest = t.oldest_version
        changes = t.changes(oldest)
        problems = check_changelog(t.read(version=oldest), changes, t.primary_key, t.read())
        self.add(
            f"{name} changelog {oldest}..{t.version} well formed ({changes.num_rows:,} changes)", problems
        )

    def _audited(self, name: str) -> None:
        """The whole history read during the run: well formed, and its tail equals the retained log."""
        if self.run_.auditor is None:
            return
        t = self.catalog.load_table(name)
        audited = self.run_.auditor.changes(name)
        empty = t.read(version=t.oldest_version).schema.empty_table()
        problems = check_changelog(empty, audited, t.primary_key, t.read())
        self.add(
            f"{name} whole changelog 0..{t.version} well formed ({audited.num_rows:,} changes)", problems
        )
        versions = pc.shift_right(audited.column(SEQ_COLUMN), 32)
        tail = audited.filter(pc.greater(versions, t.oldest_version)).sort_by(SEQ_COLUMN)
        retained = t.changes(t.oldest_version).sort_by(SEQ_COLUMN)
        same = tail.select(retained.column_names).equals(retained)
        detail = [] if same else [f"{tail.num_rows} changes read during the run, {retained.num_rows} now"]
        self.add(
            f"{name} retained log {t.oldest_version}..{t.version} equals what was read during the run", detail
        )

    def _verify(self, name: str) -> None:
        from flowlake.flow.verify import lineage, verify_table

        t = self.catalog.load_table(name)
        candidates = []
        for commit in t.history():
            if (
                commit.version < t.oldest_version
                or commit.version == t.version
                or not commit.summary.get("sources")
            ):
                continue
            _, inputs = lineage(t, commit.version)
            if all(v >= self.catalog.load_table(i).oldest_version for i, v in inputs.items()):
                candidates.append(commit.version)
        samples = sorted(self.rng.sample(candidates, min(len(candidates), self.run_.config.verify_samples)))
        for version in [*samples, None]:
            report = verify_table(self.catalog, name, version=version)
            detail = [str(d) for d in report.differences[:5]]
            if report.differences:
                detail.append(f"{len(report.differences)} differences")
            self.add(f"verify {name}@{report.version} (inputs {report.inputs}, {report.rows:,} rows)", detail)

    def _dead_letters(self) -> None:
        name = "ods._dead_letter"
        rows = self.catalog.load_table(name).read().num_rows if self.catalog.table_exists(name) else 0
        self.add("no dead letters", [f"{rows} dead letters in {name}"] if rows else [])

    def _orphans(self) -> None:
        from flowlake.flow.shop import TABLES

        storage = self.catalog.storage
        problems = []
        orphans = 0
        for name in TABLES:
            t = self.catalog.load_table(name)
            orphans += t.clean(retain_last=t.version + 1, orphan_grace_seconds=0).orphans_deleted
            record = self.catalog.store.get_table(*name.split("."))
            on_disk = {
                storage.relative(i.path) for i in storage.list_files(storage.path(record.location, "data"))
            }
            known = self.catalog.store.all_file_paths(record.id)
            if on_disk != known:
                problems.append(
                    f"{name}: {len(on_disk - known)} orphan files, {len(known - on_disk)} missing files"
                )
        self.add(
            f"no orphan or missing files after cleaning ({orphans} orphans of killed writers removed)",
            problems,
        )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_chaos(
    workdir: Path, *, seed: int, kills: int = 12, say: Callable[[str], None] | None = None, **options: Any
) -> ChaosResult:
    """Run one chaos run in ``workdir`` (see :class:`ChaosConfig` for ``options``)."""
    return ChaosRun(workdir, ChaosConfig(seed=seed, kills=kills, **options), say=say).run()


# -- entry points ------------------------------------------------------------------------------------


def _slow_writes(cat: Catalog, seconds: float) -> Catalog:
    """``cat`` with each new file held open (it exists, empty) ``seconds`` before it is written.

    Compaction writes its files in parallel just before it commits, a window of milliseconds; held
    open, they make a kill at a random moment of the work often leave files and an inflight commit
    behind, for cleaning to deal with.
    """
    import pyarrow.fs as pafs

    from flowlake.io.fs import Storage

    class SlowWrites(pafs.FSSpecHandler):  # type: ignore[misc]
        def open_output_stream(self, path: str, metadata: Any) -> Any:
            stream = super().open_output_stream(path, metadata)
            time.sleep(seconds)
            return stream

    fs = pafs.PyFileSystem(SlowWrites(cat.storage.fsspec_fs))
    storage = Storage(uri=cat.storage.uri, root=cat.storage.root, fs=fs, fsspec_fs=cat.storage.fsspec_fs)
    return Catalog(cat.store, storage, catalog_url=cat.catalog_url)


def _maintain(args: argparse.Namespace) -> int:
    """One maintenance pass over the pipeline's tables (a short-lived chaos component)."""
    from flowlake.errors import CommitConflictError
    from flowlake.flow.shop import TABLES

    cat = connect()
    if args.slow_writes > 0:
        cat = _slow_writes(cat, args.slow_writes)
    print(_READY, flush=True)
    started = time.monotonic()
    for name in TABLES:
        t = cat.load_table(name)
        print(f"{args.action} {name}", flush=True)
        try:
            if args.action == "compact":
                commit = t.compact()
                print(f"  -> {'nothing' if commit is None else commit.version}", flush=True)
            else:
                done = t.clean(retain_last=args.retain_last, orphan_grace_seconds=args.orphan_grace)
                removed = f"{done.files_deleted} files, {done.orphans_deleted} orphans"
                print(f"  -> oldest {done.oldest_version}, {removed}", flush=True)
        except CommitConflictError as exc:
            print(f"  -> skipped: {exc}", flush=True)
    print(f"done in {time.monotonic() - started:.3f}s", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowlake.testing.chaos run --seed N ...`` or ``... maintain compact|clean``."""
    parser = argparse.ArgumentParser(
        prog="python -m flowlake.testing.chaos", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one chaos run; exit code 1 if a check fails")
    run.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    for f in fields(ChaosConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(ChaosConfig(), f.name)
        if isinstance(default, tuple):
            run.add_argument(flag, type=float, nargs=2, default=default)
        else:
            run.add_argument(flag, type=type(default), default=default)
    maintain = commands.add_parser("maintain", help="one compaction or cleaning pass (a chaos component)")
    maintain.add_argument("action", choices=["compact", "clean"])
    maintain.add_argument("--retain-last", type=int, default=3)
    maintain.add_argument("--orphan-grace", type=float, default=20.0)
    maintain.add_argument("--slow-writes", type=float, default=0.0, help="seconds added to each file write")
    args = parser.parse_args(argv)
    if args.command == "maintain":
        return _maintain(args)
    import tempfile

    options = {f.name: getattr(args, f.name) for f in fields(ChaosConfig)}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flowlake-chaos-"))
    result = ChaosRun(workdir, ChaosConfig(**options), say=print).run()
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
