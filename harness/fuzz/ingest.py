"""The ingestion fuzzer: :func:`fuzz_ingest` ingests JSONL files of good Debezium records and records
that are bad by construction, and checks the dead letters and the ODS table they give."""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, Final

import orjson
import pyarrow as pa

from flowlake.cdc import logical_types as lt
from harness.fuzz._common import (
    DAY_MAX,
    DAY_MIN,
    EPOCH,
    EPOCH_DATE,
    US_MAX,
    US_MIN,
    b64_int,
    boundary_biased_int,
    drop_memory_warehouse,
    random_text,
    random_zoned_timestamp,
    same_value,
)
from harness.fuzz.report import MAX_MESSAGE_CHARS, FuzzReport, clip

_INT64: Final = (-(2**63), 2**63 - 1)


_ODS_FIELDS: Final = (
    {"type": "int32", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "name"},
    {"type": "bytes", "optional": True, "name": lt.DECIMAL, "field": "price",
     "parameters": {"scale": "2", "connect.decimal.precision": "10"}},
    {"type": "double", "optional": True, "field": "ratio"},
    {"type": "boolean", "optional": True, "field": "flag"},
    {"type": "int32", "optional": True, "name": lt.DATE, "field": "born"},
    {"type": "int64", "optional": True, "name": lt.MICRO_TIMESTAMP, "field": "seen"},
    {"type": "int64", "optional": True, "name": lt.TIMESTAMP, "field": "at_ms"},
    {"type": "string", "optional": True, "name": lt.ZONED_TIMESTAMP, "field": "zoned"},
    {"type": "bytes", "optional": True, "field": "blob"},
    {"type": "int64", "optional": True, "field": "qty"},
    {"type": "struct", "optional": True, "name": lt.VARIABLE_SCALE_DECIMAL, "field": "vsd",
     "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]},
)  # fmt: skip
"""An ODS source table with every column type an ODS table can hold."""

_ODS_ROW: Final = {
    "type": "struct",
    "optional": True,
    "name": "shop.items.Value",
    "fields": list(_ODS_FIELDS),
}
_ODS_ENVELOPE: Final = {
    "type": "struct",
    "name": "shop.items.Envelope",
    "fields": [
        {**_ODS_ROW, "field": "before"},
        {**_ODS_ROW, "field": "after"},
        {"type": "string", "field": "op"},
    ],
}


def _ods_row(rng: random.Random, key: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid row as JSON values and as the Python values the ODS table must then hold."""
    price = rng.randint(1 - 10**10, 10**10 - 1)
    days = boundary_biased_int(rng, DAY_MIN, DAY_MAX)
    micros = boundary_biased_int(rng, US_MIN, US_MAX)
    millis = boundary_biased_int(rng, US_MIN // 1000, US_MAX // 1000)
    zoned = random_zoned_timestamp(rng)
    blob = rng.randbytes(rng.randint(0, 8))
    scale, unscaled = rng.randint(0, 12), rng.randint(-(10**20), 10**20)
    ratio = rng.choice((rng.uniform(-1e12, 1e12), -0.0, 5e-324, 1.7976931348623157e308))
    name, qty, flag = random_text(rng), boundary_biased_int(rng, *_INT64), rng.random() < 0.5
    as_json = {
        "id": key, "name": name, "price": b64_int(price), "ratio": ratio, "flag": flag, "born": days,
        "seen": micros, "at_ms": millis, "zoned": zoned, "blob": base64.b64encode(blob).decode(), "qty": qty,
        "vsd": {"scale": scale, "value": b64_int(unscaled)},
    }  # fmt: skip
    as_python = {
        "id": key, "name": name, "price": Decimal(price).scaleb(-2), "ratio": ratio, "flag": flag,
        "born": EPOCH_DATE + dt.timedelta(days=days), "seen": EPOCH + dt.timedelta(microseconds=micros),
        "at_ms": EPOCH + dt.timedelta(milliseconds=millis),
        "zoned": dt.datetime.fromisoformat(zoned).astimezone(dt.UTC), "blob": blob, "qty": qty,
        "vsd": format(Decimal(unscaled).scaleb(-scale, Context(prec=100)), "f"),
    }  # fmt: skip
    for name in rng.sample(list(as_json)[1:], rng.choice((0, 0, 1, 3))):
        as_json[name] = as_python[name] = None
    return as_json, as_python


@dataclass(frozen=True, slots=True)
class _BadRecord:
    """A record that must become a dead letter, and a word its reason must contain."""

    line: bytes
    kind: str
    token: str


def _bad_record(rng: random.Random, good: bytes, payload: dict[str, Any], block: bool) -> _BadRecord:
    """Spoil a good record so that it cannot be ingested, in one of many ways."""
    roll = rng.randrange(12)
    if roll < 5:
        return _unreadable(rng, good, roll)
    spoiled, kind, token = _spoiled(rng, orjson.loads(orjson.dumps(payload)), roll)
    if not block:
        return _BadRecord(orjson.dumps(spoiled), kind, token)
    envelope = orjson.loads(orjson.dumps(_ODS_ENVELOPE))
    if rng.random() < 0.15:  # a broken schema block instead
        envelope["fields"][1]["fields"][rng.randrange(len(_ODS_FIELDS))]["type"] = "no-such-type"
        return _BadRecord(
            orjson.dumps({"schema": envelope, "payload": payload}), "bad schema block", "schema"
        )
    return _BadRecord(orjson.dumps({"schema": envelope, "payload": spoiled}), kind, token)


def _unreadable(rng: random.Random, good: bytes, roll: int) -> _BadRecord:
    """A line that is not a Debezium message at all."""
    if roll == 0:
        return _BadRecord(good[: rng.randrange(1, len(good) - 1)], "truncated JSON", "Debezium message")
    if roll == 1:
        junk = bytes(b for b in rng.randbytes(rng.randint(1, 40)) if b not in b"\r\n")
        return _BadRecord(b"\x01" + junk, "random bytes", "Debezium message")
    if roll == 2:
        cut = good.index(b'"name"')
        return _BadRecord(good[:cut] + b'"\xff\xfe":1,' + good[cut:], "invalid UTF-8", "Debezium message")
    if roll == 3:
        nan = re.sub(rb'"ratio":[^,}]+', b'"ratio":NaN', good, count=1)
        return _BadRecord(nan, "NaN token", "Debezium message")
    return _BadRecord(rng.choice((b"[1,2]", b'"text"', b"42", b"true")), "not an object", "JSON object")


def _spoiled(rng: random.Random, payload: dict[str, Any], roll: int) -> tuple[dict[str, Any], str, str]:
    """A Debezium payload that cannot be applied: (payload, kind of defect, a word its reason names)."""
    image = payload.get("after") or payload.get("before") or {}
    if roll == 5:
        del payload["source"]
        return payload, "no source", "table is unknown"
    if roll == 6:
        payload["op"] = rng.choice(("x", "t", "", 5))
        return payload, "bad op", "'op'" if payload["op"] != "t" else "truncate"
    if roll == 7:
        payload["op"], payload["after"], payload["before"] = rng.choice(("c", "u")), None, image
        return payload, "no after", "'after'"
    if roll == 8:
        image["id"] = None
        return payload, "null key", "'id'"
    if roll == 9:
        name, value = rng.choice(_ODS_BAD_VALUES)
        image[name] = value
        return payload, "bad value", repr(name)
    if roll == 10:
        image["_kind"] = 1
        return payload, "reserved column", "'_kind'"
    payload["op"], payload["before"], payload["after"] = "d", None, None
    return payload, "delete without before", "'before'"


_ODS_BAD_VALUES: Final = (
    ("id", 2**40), ("id", "7"), ("name", 5), ("name", {"a": 1}), ("price", b64_int(10**12)), ("price", "%%"),
    ("ratio", "x"), ("flag", 1), ("born", 10**7), ("born", -(10**7)), ("seen", 2**62), ("at_ms", -(2**62)),
    ("zoned", "10000-01-01T00:00:00Z"), ("zoned", "2020-01-01T00:00:00"), ("blob", "not base64"),
    ("qty", "x" * 100_000), ("qty", 1.5), ("vsd", {"scale": 10**6, "value": "AQ=="}), ("vsd", "1.5"),
)  # fmt: skip
"""Values no column of :data:`_ODS_FIELDS` may hold."""


@dataclass(slots=True)
class _IngestInput:
    """One JSONL file: all lines, the good lines, the bad records and the ODS rows they must give."""

    lines: list[bytes] = field(default_factory=list)
    good_lines: list[bytes] = field(default_factory=list)
    bad: list[_BadRecord] = field(default_factory=list)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    images: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, line: bytes, *, bad: _BadRecord | None = None) -> None:
        self.lines.append(line)
        if bad is None:
            self.good_lines.append(line)
        else:
            self.bad.append(bad)


def _ingest_input(rng: random.Random, size: int, bad_share: float) -> _IngestInput:
    """Records of one source table, some in BEGIN/END transactions, a share of them spoiled."""
    out = _IngestInput()
    seq = 0
    while len(out.lines) < size:
        txid = f"tx{seq}" if rng.random() < 0.4 else None
        count = rng.randint(1, 12) if txid else 1
        if txid:
            out.add(orjson.dumps({"status": "BEGIN", "id": txid, "event_count": count}))
        for order in range(count):
            seq += 1
            key = rng.randint(0, 40)
            op = rng.choice("uud") if key in out.rows else rng.choice("cr")
            after, after_py = _ods_row(rng, key) if op != "d" else (None, None)
            source = {
                "connector": "mysql",
                "db": "shop",
                "table": "items",
                "file": "mysql-bin.000001",
                "pos": seq,
            }
            payload: dict[str, Any] = {
                "before": out.images.get(key) if op in "ud" else None, "after": after, "source": source,
                "op": op, "ts_ms": seq,
            }  # fmt: skip
            if txid:
                payload["transaction"] = {
                    "id": txid,
                    "total_order": order + 1,
                    "data_collection_order": order + 1,
                }
            line = orjson.dumps({"schema": _ODS_ENVELOPE, "payload": payload})
            if rng.random() < bad_share:
                bad = _bad_record(rng, line, payload, rng.random() < 0.9)
                out.add(bad.line, bad=bad)
                continue
            out.add(line)
            if after is None:
                out.rows.pop(key, None)
                out.images.pop(key, None)
            else:
                out.rows[key], out.images[key] = after_py or {}, after
        if txid:
            out.add(orjson.dumps({"status": "END", "id": txid, "event_count": count}))
    return out


@dataclass(frozen=True, slots=True)
class _IngestResult:
    rows: list[dict[str, Any]]
    schema: pa.Schema | None
    dead: list[dict[str, Any]]
    commits: int


def _ingest(lines: list[bytes], where: str) -> _IngestResult:
    """Run an ingester over ``lines`` (a JSONL file in memory) into a fresh memory:// warehouse."""
    import fsspec

    from flowlake.cdc.ingest import OdsIngester
    from flowlake.cdc.jsonl import JsonlSource
    from flowlake.lake import connect

    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/{where}/in/cdc.jsonl", b"".join(line + b"\n" for line in lines))
    catalog = connect(catalog="sqlite://", warehouse=f"memory://{where}/wh")
    source = JsonlSource(f"memory://{where}/in", follow=False)
    stats = OdsIngester(catalog, source, primary_keys={"shop.items": ["id"]}).run(until_idle=True)
    table = catalog.load_table("ods.items") if catalog.table_exists("ods.items") else None
    dead = catalog.load_table("ods._dead_letter").read().to_pylist() if stats.dead_letters else []
    rows = sorted(table.read().to_pylist(), key=lambda r: r["id"]) if table is not None else []
    return _IngestResult(rows, table.schema if table is not None else None, dead, stats.commits)


def _check_dead_letters(
    report: FuzzReport, index: int, data: _IngestInput, dead: list[dict[str, Any]]
) -> None:
    expected = Counter(b.line for b in data.bad)
    found = Counter(d["raw"] for d in dead)
    if found != expected:
        missing = list((expected - found).elements())[:3]
        extra = list((found - expected).elements())[:3]
        detail = (
            f"{len(dead)} dead letters for {len(data.bad)} bad records; "
            f"missing {clip(missing)}, extra {clip(extra)}"
        )
        report.fail(index, "dead letters differ from the bad records", detail, missing or extra)
    by_line = {b.line: b for b in data.bad}
    for letter in dead:
        bad = by_line.get(letter["raw"])
        error, position = letter["error"] or "", orjson.loads(letter["position"] or "{}")
        if bad is not None and (
            bad.token not in error or "offset" not in position or len(error) > MAX_MESSAGE_CHARS
        ):
            detail = f"{bad.kind}: reason {error[:300]!r} (wanted {bad.token!r}), position {position}"
            report.fail(index, "dead letter without a clear reason and offset", detail, letter["raw"])


def fuzz_ingest(n: int, seed: int, *, records_per_run: int = 400, bad_share: float = 0.3) -> FuzzReport:
    """Ingest ``n`` JSONL records, ``bad_share`` of them spoiled, and check every one of them.

    Each run of ``records_per_run`` records is ingested twice: as it is, and with only its good
    records; the two ODS tables must be equal and equal to the oracle built from the good records.

    Returns:
        The report (``rejected`` counts bad records by kind); ``crashes`` is 0 when every check held.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    report = FuzzReport("ingest", seed)
    started = time.perf_counter()
    run = 0
    while report.inputs < n:
        run += 1
        data = _ingest_input(rng, min(records_per_run, n - report.inputs), bad_share)
        where = f"flowlake-fuzz-ingest-{seed}-{run}-{uuid.uuid4().hex[:6]}"
        index = report.inputs
        report.inputs += len(data.lines)
        try:
            mixed = _ingest(data.lines, where + "-mixed")
            clean = _ingest(data.good_lines, where + "-good")
        except Exception as exc:
            report.fail(index, f"ingestion raised {type(exc).__name__}", str(exc), data.lines)
            continue
        finally:
            drop_memory_warehouse(f"memory://{where}-mixed")
            drop_memory_warehouse(f"memory://{where}-good")
        report.accepted += len(data.good_lines)
        for bad in data.bad:
            report.reject(bad.kind)
        report.dead_letters += len(mixed.dead)
        report.commits += mixed.commits
        _check_dead_letters(report, index, data, mixed.dead)
        if clean.dead:
            report.fail(index, "good records were dead-lettered", clip(clean.dead[:2]), data.good_lines)
        expected = sorted(data.rows.values(), key=lambda r: r["id"])
        if mixed.schema != clean.schema or not same_value(mixed.rows, clean.rows):
            report.fail(
                index,
                "bad records changed what the good ones ingest",
                _first_difference(mixed.rows, clean.rows),
                data.lines,
            )
        elif not same_value(clean.rows, expected):
            report.fail(
                index, "ODS differs from the oracle", _first_difference(clean.rows, expected), data.good_lines
            )
    report.seconds = time.perf_counter() - started
    return report


def _first_difference(got: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> str:
    for a, b in zip(got, wanted, strict=False):
        if not same_value(a, b):
            return f"{clip(a, 600)} vs {clip(b, 600)}"
    return f"{len(got)} rows vs {len(wanted)}"
