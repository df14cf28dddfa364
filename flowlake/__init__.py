"""flowlake: real-time data lakes in pure Python."""

from flowlake.catalog.base import Commit
from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import (
    AuthenticationError,
    CatalogError,
    CdcDecodeError,
    CommitConflictError,
    CorruptRecordError,
    FlowlakeError,
    InvalidArgumentError,
    InvalidChangelogError,
    InvalidNameError,
    NullKeyError,
    PermissionDeniedError,
    SchemaMismatchError,
    SqlError,
    SqlSandboxError,
    StorageError,
    TableExistsError,
    TableNotFoundError,
    UnsupportedSqlError,
    VersionCleanedError,
    VersionNotFoundError,
)
from flowlake.lake import Catalog, connect
from flowlake.table.pins import Pin
from flowlake.table.table import LakeTable

__version__ = "0.1.0"

__all__ = [
    "KIND_COLUMN",
    "SEQ_COLUMN",
    "AuthenticationError",
    "Catalog",
    "CatalogError",
    "CdcDecodeError",
    "Commit",
    "CommitConflictError",
    "CorruptRecordError",
    "FlowlakeError",
    "InvalidArgumentError",
    "InvalidChangelogError",
    "InvalidNameError",
    "LakeTable",
    "NullKeyError",
    "PermissionDeniedError",
    "Pin",
    "RowKind",
    "SchemaMismatchError",
    "SqlError",
    "SqlSandboxError",
    "StorageError",
    "TableExistsError",
    "TableNotFoundError",
    "UnsupportedSqlError",
    "VersionCleanedError",
    "VersionNotFoundError",
    "connect",
]
