"""Fuzzing ingestion: arbitrary and mutated lines never stop it, and bad ones land as dead letters."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource

SOURCE = {"connector": "mysql", "db": "shop", "table": "t", "file": "mysql-bin.000001", "pos": 4}

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6)
rows = st.fixed_dictionaries(
    {"id": st.integers(0, 20) | json_scalars},
    optional={"name": json_scalars, "qty": json_scalars, "_kind": st.integers(0, 3)},
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(["c", "r", "u", "d", "t", "m", "x"]))
    payload: dict[str, Any] = {"op": op, "source": SOURCE}
    if op in ("c", "r", "u"):
        payload["after"] = draw(rows | json_scalars)
    if op in ("u", "d"):
        payload["before"] = draw(rows | st.none())
    if draw(st.booleans()):
        payload["transaction"] = {"id": draw(st.sampled_from(["a", "b"])), "total_order": 1}
    for key in draw(st.lists(st.sampled_from(["source", "op", "after"]), max_size=1)):
        payload[key] = draw(json_scalars)
    text = orjson.dumps(payload)
    cut = draw(st.integers(0, len(text)))
    return text[:cut] if draw(st.integers(0, 9)) == 0 else text


lines = st.lists(
    messages()
    | st.binary(max_size=20).map(lambda b: b.replace(b"\n", b" "))
    | st.sampled_from([b'{"status":"BEGIN","id":"a"}', b'{"status":"END","id":"a"}', b"null"]),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_any_input_is_ingested_or_dead_lettered(batch: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        (root / "in" / "a.jsonl").write_bytes(b"".join(line + b"\n" for line in batch))
        cat = fl.connect(catalog=f"sqlite:///{root / 'c.db'}", warehouse=(root / "wh").as_uri())
        stats = OdsIngester(cat, JsonlSource(str(root / "in"), follow=False)).run(until_idle=True)
        dead = cat.load_table("ods._dead_letter").read().to_pylist() if stats.dead_letters else []
        assert len(dead) == stats.dead_letters
        stripped = {line.rstrip(b"\r") for line in batch}
        assert all(d["raw"] in stripped and d["error"] for d in dead)
        begins = [i for i, line in enumerate(batch) if line.startswith(b'{"status":"BEGIN"')]
        ends = [i for i, line in enumerate(batch) if line.startswith(b'{"status":"END"')]
        if begins and (not ends or begins[-1] > ends[-1]):
            batch = batch[: begins[-1]]  # a transaction without its END waits, unread, for the rest
        for line in batch:  # every line that is not a JSON object (nor blank, nor null) is a dead letter
            try:
                ok = line.strip() in (b"", b"null") or type(orjson.loads(line)) is dict
            except orjson.JSONDecodeError:
                ok = False
            assert ok or line.rstrip(b"\r") in {d["raw"] for d in dead}
        if cat.table_exists("ods.t"):
            table = cat.load_table("ods.t").read()
            assert table.column("id").null_count == 0
