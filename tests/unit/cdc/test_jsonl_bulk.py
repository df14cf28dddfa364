"""The JSONL bulk path (pyarrow.json windows, Arrow changelogs) gives exactly what the per-line path gives:
the same ODS rows, commits' positions, dead letters and their reasons, on messy random inputs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource
from flowlake.cdc.jsonl_bulk import MessageBatch, changelog_batch, groups_of, parse_window
from flowlake.cdc.source import ChangeBatch, TableFilter

SCHEMA = pa.schema([("id", pa.int64()), ("qty", pa.int64()), ("note", pa.string()), ("price", pa.float64())])


def _row(rng: random.Random, key: int) -> dict[str, Any]:
    return {
        "id": key,
        "qty": rng.randrange(100),
        "note": rng.choice(["a", "b", "ü", ""]),
        "price": rng.random(),
    }


def stream(seed: int, n: int, *, mess: float) -> list[bytes]:
    """Changes to two tables; with probability ``mess`` a line is odd in one of many ways."""
    rng = random.Random(seed)
    live: dict[str, dict[int, dict[str, Any]]] = {"orders": {}, "items": {}}
    lines: list[bytes] = []
    tx = 0
    for i in range(n):
        table = rng.choice(["orders", "orders", "items"])
        rows = live[table]
        source = {"db": "shop", "table": table, "pos": i}
        txid = None
        if rng.random() < 0.3:
            tx += rng.random() < 0.2
            txid = f"tx{tx}"
        if rows and rng.random() < 0.4:
            key = rng.choice(list(rows))
            new = {**_row(rng, key)}
            m: dict[str, Any] = {"op": "u", "before": rows[key], "after": new}
            rows[key] = new
        elif rows and rng.random() < 0.1:
            key = rng.choice(list(rows))
            m = {"op": "d", "before": rows.pop(key), "after": None}
        else:
            key = rng.randrange(10**6)
            rows[key] = _row(rng, key)
            m = {"op": rng.choice("cr"), "before": None, "after": rows[key]}
        m["source"] = source
        if txid is not None:
            m["transaction"] = {"id": txid, "total_order": 1, "data_collection_order": 1}
        line = orjson.dumps(m)
        if rng.random() < mess:
            line = rng.choice(_ODD)(m, rng)
        lines.append(line)
    return lines


def _odd_key_only(m: dict[str, Any], rng: random.Random) -> bytes:
    if m["op"] in ("u", "d"):
        m = {**m, "before": {"id": m["before"]["id"], "qty": None}}
    return orjson.dumps(m)


_ODD = [
    lambda m, rng: b"not json",
    lambda m, rng: b"",
    lambda m, rng: b"null",
    lambda m, rng: orjson.dumps({**m, "op": "t"}),
    lambda m, rng: orjson.dumps({**m, "after": {**(m["after"] or {"id": 1}), "qty": "many"}}),
    lambda m, rng: orjson.dumps({**m, "after": {**(m["after"] or {"id": 1}), "qty": 1.5}}),
    lambda m, rng: orjson.dumps({**m, "after": {**(m["after"] or {"id": 1}), "extra": 7}}),
    lambda m, rng: orjson.dumps({**m, "after": {**(m["after"] or {"id": 1}), "id": None}}),
    lambda m, rng: orjson.dumps(m).replace(b'"price":', b'"price":NaN,"x":', 1),
    lambda m, rng: orjson.dumps({**m, "after": {**(m["after"] or {"id": 1}), "qty": 7}}).replace(
        b'"qty":7', b'"qty":1180591620717411303424'
    ),
    lambda m, rng: orjson.dumps({**m, "source": {"db": "shop"}}),
    lambda m, rng: orjson.dumps({"status": "BEGIN", "id": "txb", "event_count": 1}),
    lambda m, rng: orjson.dumps({**m, "source": {"db": "other", "table": "x"}}),
    _odd_key_only,
]


def ingest(tmp: Path, name: str, lines: list[bytes], *, bulk: bool, read_bytes: int) -> dict[str, Any]:
    folder = tmp / name
    folder.mkdir()
    (folder / "0001.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cat = fl.connect(catalog=f"sqlite:///{tmp / (name + '.db')}", warehouse=(tmp / (name + "-wh")).as_uri())
    source = JsonlSource(str(folder), follow=False, bulk=bulk, tables="shop.*", read_bytes=read_bytes)
    source.max_line_bytes = 4096
    keys = {"shop.orders": ["id"], "shop.items": ["id"]}
    OdsIngester(cat, source, primary_keys=keys, max_rows=500).run(until_idle=True)
    out: dict[str, Any] = {}
    for table in sorted(cat.list_tables("ods")):
        t = cat.load_table(table)
        data = t.read()
        drop = [c for c in data.column_names if c in ("ingested_at", "_seq")]
        rows = data.drop_columns(drop).to_pylist()
        out[table] = sorted(rows, key=repr)
        if not table.endswith("_dead_letter"):
            out[table + "@position"] = t.source_position(source.key)
            out[table + "@schema"] = str(t.schema)
    text = orjson.dumps(out, default=repr).decode().replace(str(folder), "<dir>")
    return dict(orjson.loads(text))


@pytest.mark.parametrize("seed", range(6))
def test_bulk_and_per_line_paths_agree(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = stream(seed, 1500, mess=[0.0, 0.002, 0.01, 0.05, 0.0, 0.02][seed])
    read_bytes = [1 << 20, 20_000, 50_000, 1 << 20, 15_000, 30_000][seed]
    taken: list[int] = []

    def counting(batch: MessageBatch, schema: pa.Schema, key: Sequence[str]) -> ChangeBatch | None:
        changes = changelog_batch(batch, schema, key)
        taken.append(0 if changes is None else len(changes))
        return changes

    monkeypatch.setattr("flowlake.cdc.jsonl.changelog_batch", counting)
    fast = ingest(tmp_path, "bulk", lines, bulk=True, read_bytes=read_bytes)
    slow = ingest(tmp_path, "lines", lines, bulk=False, read_bytes=read_bytes)
    assert fast == slow
    if seed in (0, 4):  # clean: most windows take the bulk path
        assert sum(taken) > 500, taken


def test_clean_windows_take_the_bulk_path() -> None:
    lines = stream(1, 2000, mess=0.0)
    data = b"\n".join(lines) + b"\n"
    window = parse_window(data, 1 << 20, TableFilter.parse("shop.*"))
    assert window is not None and sorted(window.tables) == ["shop.items", "shop.orders"]
    runs = groups_of(window, 1000)
    assert runs is not None
    batch = window.batch(runs[0][0], runs[0][1], "shop.orders")
    assert changelog_batch(batch, SCHEMA, ["id"]) is not None


@pytest.mark.parametrize(
    "odd",
    [b"null", b"", b" {}", b'{"op":"c","after":{"id":1,"x":NaN},"source":{"db":"a","table":"b"}}'],
)
def test_windows_the_bulk_parser_must_not_take(odd: bytes) -> None:
    lines = stream(2, 200, mess=0.0)
    data = b"\n".join([*lines[:100], odd, *lines[100:]]) + b"\n"
    assert parse_window(data, 1 << 20, TableFilter()) is None


def test_a_number_beyond_uint64_goes_line_by_line() -> None:
    lines = stream(3, 200, mess=0.0)
    big = b'{"op":"c","after":{"id":1},"source":{"db":"shop","table":"orders","pos":184467440737095516150}}'
    assert parse_window(b"\n".join([*lines, big]) + b"\n", 1 << 20, TableFilter()) is None
