"""Change data capture: decode Debezium JSON, read MySQL/MariaDB binlogs, PostgreSQL logical
replication and JSONL files, and ingest
them into ODS lake tables exactly once (with dead letters for what cannot be ingested)."""

from __future__ import annotations

from flowlake.cdc.change import Change, SourceInfo, source_info
from flowlake.cdc.deadletter import DEAD_LETTER_SCHEMA, count_dead_letters
from flowlake.cdc.debezium import (
    DecodedBatch,
    DecodeFailure,
    debezium_schema_to_arrow,
    decode,
    decode_batch,
)
from flowlake.cdc.ingest import IngestStats, OdsIngester, stored_position
from flowlake.cdc.jsonl import JsonlSource
from flowlake.cdc.logical_types import DecimalHandling, FieldDecoder
from flowlake.cdc.mysql import MySqlSource
from flowlake.cdc.mysql_binlog import CdcSourceError
from flowlake.cdc.postgres import PostgresSource
from flowlake.cdc.replay import (
    StoredDeadLetter,
    list_dead_letters,
    replay_dead_letters,
    resolve_ods_table,
    summarize_dead_letters,
)
from flowlake.cdc.source import (
    ChangeGroup,
    DeadLetter,
    SnapshotProgress,
    Source,
    TableFilter,
    TableSpec,
    ods_table_name,
    open_source,
)

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "CdcSourceError",
    "Change",
    "ChangeGroup",
    "DeadLetter",
    "DecimalHandling",
    "DecodeFailure",
    "DecodedBatch",
    "FieldDecoder",
    "IngestStats",
    "JsonlSource",
    "MySqlSource",
    "OdsIngester",
    "PostgresSource",
    "SnapshotProgress",
    "Source",
    "SourceInfo",
    "StoredDeadLetter",
    "TableFilter",
    "TableSpec",
    "count_dead_letters",
    "debezium_schema_to_arrow",
    "decode",
    "decode_batch",
    "list_dead_letters",
    "ods_table_name",
    "open_source",
    "replay_dead_letters",
    "resolve_ods_table",
    "source_info",
    "stored_position",
    "summarize_dead_letters",
]
