"""The REST metastore's wire format: catalog values to and from JSON.

Dataclasses travel as ``{"__t": "<name>", ...fields}``, bytes as ``{"__b": base64}``, Arrow schemas as
``{"__schema": base64 IPC}``, datetimes as ``{"__dt": iso}`` and tuples as ``{"__tuple": [...]}``.
Only the catalog's own value types are accepted on decode, so a request cannot make the server
build arbitrary objects.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from typing import Any

import pyarrow as pa

from flowlake.catalog.base import Commit, CommitRequest, DataFile, TableRecord
from flowlake.errors import CatalogError

_TYPES: dict[str, type] = {t.__name__: t for t in (Commit, CommitRequest, DataFile, TableRecord)}


def encode(value: Any) -> Any:
    """A JSON-able form of ``value``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__t": type(value).__name__, **fields}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, pa.Schema):
        return {"__schema": base64.b64encode(bytes(value.serialize())).decode()}
    if isinstance(value, dt.datetime):
        return {"__dt": value.isoformat()}
    if isinstance(value, tuple):
        return {"__tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, set | frozenset):
        return {"__set": [encode(v) for v in sorted(value)]}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__t" in value:
        kind = _TYPES.get(value["__t"])
        if kind is None:
            raise CatalogError(f"unknown value type {value['__t']!r} on the wire")
        return kind(**{k: decode(v) for k, v in value.items() if k != "__t"})
    if "__b" in value:
        return base64.b64decode(value["__b"])
    if "__schema" in value:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value["__schema"])))
    if "__dt" in value:
        return dt.datetime.fromisoformat(value["__dt"])
    if "__tuple" in value:
        return tuple(decode(v) for v in value["__tuple"])
    if "__set" in value:
        return {decode(v) for v in value["__set"]}
    return {k: decode(v) for k, v in value.items()}
