"""Debezium JSON lines on S3 (moto's server) into ODS, with resume across files."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource


def msg(op: str, before: Any, after: Any) -> bytes:
    return orjson.dumps(
        {"op": op, "before": before, "after": after, "source": {"db": "shop", "table": "orders"}}
    )


@pytest.mark.s3
@pytest.mark.integration
def test_reads_and_resumes_jsonl_on_s3(catalog: fl.Catalog, s3_endpoint: str) -> None:
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("cdc-in")
    fs.pipe("cdc-in/topic/0001.jsonl", msg("c", None, {"id": 1, "v": "a"}) + b"\n")
    url = "s3://cdc-in/topic"

    def run() -> Any:
        return OdsIngester(catalog, JsonlSource(url, storage_options=options, follow=False)).run(
            until_idle=True
        )

    assert run().changes == 1
    fs.pipe("cdc-in/topic/0002.jsonl", msg("u", {"id": 1, "v": "a"}, {"id": 1, "v": "b"}) + b"\n")
    assert run().changes == 2
    orders = catalog.load_table("ods.orders")
    assert orders.read().to_pylist() == [{"id": 1, "v": "b"}]
    position = orders.source_position(f"jsonl:{url}")
    assert position is not None
    assert position["file"].endswith("0002.jsonl")
