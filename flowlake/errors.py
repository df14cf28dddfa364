"""Every error flowlake raises, sorted by what the caller can do about it.

::

    FlowlakeError
    ├── InvalidNameError            a namespace/table/column name is not allowed
    ├── InvalidArgumentError        an argument has a value flowlake cannot use
    ├── CatalogError                the catalog cannot be opened or is inconsistent
    │   ├── CatalogVersionError     the catalog was written by another flowlake version
    │   ├── CatalogBusyError        the catalog database stayed locked through every retry
    │   └── WireFormatError         a metastore request does not decode into catalog values
    ├── TableNotFoundError          no such table in the catalog
    ├── TableExistsError            create_table on a name that is taken
    ├── VersionNotFoundError        a version/time that the table does not have
    │   └── VersionCleanedError     the version existed but its files were cleaned
    ├── SchemaMismatchError         data or a schema change does not fit the table schema
    ├── NullKeyError                a primary-key value is null
    ├── InvalidChangelogError       a changelog batch has a bad ``_kind`` column
    ├── CommitConflictError         another writer committed first and the commit cannot rebase
    ├── PermissionDeniedError       the principal lacks a privilege
    ├── AuthenticationError         the metastore refused the token
    ├── StorageError                reading or writing a data file failed
    │   └── CorruptFileError        a data file does not match its commit metadata
    ├── CdcDecodeError              a CDC record cannot be decoded
    │   └── CorruptRecordError      a CDC record is structurally broken
    └── SqlError                    a SQL text cannot be parsed, planned or run
        ├── UnsupportedSqlError     valid SQL that flowlake cannot maintain incrementally
        └── SqlSandboxError         a query reached outside its tables (files, COPY, SET, ...)
"""

from __future__ import annotations

from collections.abc import Sequence


class FlowlakeError(Exception):
    """Base class for every error flowlake raises."""


class InvalidNameError(FlowlakeError, ValueError):
    """A namespace, table or column name is not allowed."""


class InvalidArgumentError(FlowlakeError, ValueError):
    """An argument has a value flowlake cannot use."""


class CatalogError(FlowlakeError):
    """The catalog cannot be opened, or its contents are inconsistent."""


class CatalogVersionError(CatalogError):
    """The catalog's schema version is not one this flowlake can use."""


class CatalogBusyError(CatalogError):
    """The catalog database stayed locked or busy (other processes held it) through every retry.

    flowlake retries such transient failures itself (with jittered back-off) when it opens a catalog
    and creates tables; this error means the contention outlasted those retries. Retrying later is
    safe: nothing was changed.
    """


class WireFormatError(CatalogError):
    """A REST metastore request does not decode into catalog values (the server answers 400)."""


class TableNotFoundError(FlowlakeError, KeyError):
    """No table of that name exists in the catalog."""

    def __init__(self, name: str, *, hint: str | None = None) -> None:
        hint = hint or (
            "list tables with `flowlake tables` or cat.list_tables(), or create it with cat.create_table()"
        )
        super().__init__(f"table {name!r} does not exist; {hint}")
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class TableExistsError(FlowlakeError):
    """A table of that name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"table {name!r} already exists; load it with cat.load_table({name!r}) or pass exist_ok=True"
        )
        self.name = name


class VersionNotFoundError(FlowlakeError, LookupError):
    """The table has no such version (or no version at that time)."""


class VersionCleanedError(VersionNotFoundError):
    """The version existed, but cleaning removed the files it needs."""

    def __init__(self, table: str, version: int, oldest: int) -> None:
        super().__init__(
            f"version {version} of {table!r} was cleaned; the oldest readable version is {oldest}. "
            "Read a newer version, or keep more history with clean(retain_last=N) / a registered consumer"
        )
        self.table, self.version, self.oldest = table, version, oldest


class SchemaMismatchError(FlowlakeError, TypeError):
    """Data or a schema change does not fit the table's schema."""

    def __init__(self, table: str, column: str, problem: str) -> None:
        super().__init__(f"table {table!r}, column {column!r}: {problem}")
        self.table, self.column, self.problem = table, column, problem


class NullKeyError(FlowlakeError, ValueError):
    """A primary-key column holds a null."""

    def __init__(self, table: str, column: str, row: int) -> None:
        super().__init__(
            f"table {table!r}: primary-key column {column!r} is null at row {row} of the batch; "
            "every key column needs a value (filter or fill those rows first)"
        )
        self.table, self.column, self.row = table, column, row


class InvalidChangelogError(FlowlakeError, ValueError):
    """A changelog batch is malformed (missing or bad ``_kind``)."""


class CommitConflictError(FlowlakeError):
    """Another writer committed first and this commit cannot be rebased on it."""

    def __init__(
        self,
        table: str,
        expected: int,
        found: int,
        *,
        reason: str = "",
        sample_keys: Sequence[object] = (),
        mergeable: bool = False,
        conflicting_hashes: Sequence[int] = (),
        reroute: bool = False,
    ) -> None:
        detail = f" ({reason})" if reason else ""
        keys = f"; sample keys: {list(sample_keys)[:5]!r}" if sample_keys else ""
        super().__init__(
            f"commit to {table!r} was prepared against version {expected} but the table is at "
            f"version {found}{detail}{keys}; reload the table and retry"
        )
        self.table, self.expected, self.found = table, expected, found
        self.reason = reason
        self.sample_keys = list(sample_keys)
        self.mergeable = mergeable
        """True when the overlap is the same keys with disjoint columns (a column merge is possible)."""
        self.conflicting_hashes = list(conflicting_hashes)
        self.reroute = reroute
        """True when only the bucket map moved (a split/merge): the write is redone whatever the policy."""


class PermissionDeniedError(FlowlakeError, PermissionError):
    """The principal lacks a privilege on an object."""

    def __init__(self, principal: str, privilege: str, obj: str, *, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"principal {principal!r} lacks {privilege!r} on {obj!r}{why}; ask an admin to run "
            f"`flowlake grant {privilege} {obj} {principal}`"
        )
        self.principal, self.privilege, self.object = principal, privilege, obj
        self.detail = detail


class AuthenticationError(FlowlakeError):
    """The metastore did not accept the credentials (missing, unknown or revoked token)."""


class StorageError(FlowlakeError, OSError):
    """Reading or writing a data file failed."""


class CorruptFileError(StorageError):
    """A data file does not match what its commit recorded."""


class CdcDecodeError(FlowlakeError, ValueError):
    """A CDC record cannot be decoded."""


class CorruptRecordError(CdcDecodeError):
    """A CDC record is structurally broken (not JSON, wrong envelope, bad field)."""


class SqlError(FlowlakeError, ValueError):
    """A SQL text cannot be parsed, planned or run; the message names the place and the reason."""


class UnsupportedSqlError(SqlError):
    """Valid SQL that flowlake cannot maintain incrementally (the message says what to write instead)."""


class SqlSandboxError(SqlError):
    """A SQL query reached for something outside the catalog tables it may read.

    ``flowlake sql`` (and everything built on :mod:`flowlake.sql.sandbox`) runs one read-only SELECT
    over catalog snapshots; file functions, COPY, ATTACH, INSTALL/LOAD, SET and PRAGMA are refused.
    """


def short_repr(value: object) -> str:
    """``repr`` cut to 60 characters, for quoting input in error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
