"""Metrics that workers expose and the JSON log format."""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid

import pyarrow as pa
import pytest
from prometheus_client import generate_latest

import flowlake as fl
from flowlake.runtime.observability import REGISTRY, JsonFormatter, setup_from_env
from flowlake.testing import free_port


def test_commits_are_counted() -> None:
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://obs-{uuid.uuid4().hex}")
    t = cat.create_table("ods.obs", pa.schema([("k", pa.int64()), ("v", pa.int64())]), primary_key=["k"])
    t.upsert(pa.table({"k": [1, 2], "v": [1, 1]}))
    t.upsert(pa.table({"k": [1], "v": [2]}))
    text = generate_latest(REGISTRY).decode()
    assert 'flowlake_rows_committed_total{kind="+I",table="ods.obs"} 2.0' in text
    assert 'flowlake_rows_committed_total{kind="+U",table="ods.obs"} 1.0' in text
    assert 'flowlake_commits_total{operation="write",table="ods.obs"} 2.0' in text
    assert 'flowlake_log_backlog_files{table="ods.obs"}' in text


def test_metrics_server_and_json_logs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("FLOWLAKE_METRICS_PORT", str(port))
    monkeypatch.setenv("FLOWLAKE_LOG_FORMAT", "json")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert setup_from_env() == port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "flowlake_commit_seconds" in body
        logging.getLogger("flowlake.test").info("committed", extra={"table": "ods.x", "version": 3})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        expected = {
            "level": "info",
            "logger": "flowlake.test",
            "message": "committed",
            "table": "ods.x",
            "version": 3,
        }
        assert json.loads(line) | {"ts": 0} == {"ts": 0, **expected}
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)
