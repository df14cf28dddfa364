"""Change data capture: decode Debezium JSON change events into flowlake changelogs."""

from __future__ import annotations

from flowlake.cdc.change import Change, SourceInfo, source_info
from flowlake.cdc.debezium import (
    DecodedBatch,
    DecodeFailure,
    debezium_schema_to_arrow,
    decode,
    decode_batch,
)
from flowlake.cdc.logical_types import DecimalHandling, FieldDecoder

__all__ = [
    "Change",
    "DecimalHandling",
    "DecodeFailure",
    "DecodedBatch",
    "FieldDecoder",
    "SourceInfo",
    "debezium_schema_to_arrow",
    "decode",
    "decode_batch",
    "source_info",
]
