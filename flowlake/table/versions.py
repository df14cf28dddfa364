"""Which version a read sees: time-travel resolution, a version's schema, and the cleaned-version guard.

A version is readable from the table's oldest readable version (cleaning moves it forward) up to the
head. A clean forgets files in the catalog before it deletes them, so a read that races with one may
find a file missing or be handed an incomplete file list; :func:`unless_cleaned` turns both into
``VersionCleanedError`` by checking, once the read is done, whether the oldest readable version has
moved past the version read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import pyarrow as pa

from flowlake.catalog.base import MetaStore
from flowlake.errors import InvalidArgumentError, StorageError, VersionCleanedError, VersionNotFoundError


def resolve_version(
    store: MetaStore,
    table_id: int,
    table_name: str,
    version: int | None = None,
    as_of: dt.datetime | int | str | None = None,
) -> int:
    """The version to read: ``version``, or the newest at time ``as_of``, or the head.

    ``as_of`` is a datetime or ISO 8601 text (naive means UTC) or epoch milliseconds; a moment before
    the table's first version or after now is a ``VersionNotFoundError`` that says which.
    """
    head, oldest = store.current_version(table_id)
    if version is not None and as_of is not None:
        raise InvalidArgumentError("pass either version= or as_of=, not both")
    if as_of is not None:
        moment = _moment(table_name, as_of)
        if moment > dt.datetime.now(dt.UTC):
            raise VersionNotFoundError(
                f"table {table_name!r}: as_of {moment.isoformat()} is in the future; read the head "
                "(no as_of) or give a past time"
            )
        found = store.version_at(table_id, int(moment.timestamp() * 1000))
        if found is None:
            raise VersionNotFoundError(
                f"table {table_name!r} has no version committed at or before {moment.isoformat()}; "
                "its history starts later (see t.history())"
            )
        version = found
    if version is None:
        return head
    if not isinstance(version, int) or version < 0 or version > head:
        raise VersionNotFoundError(
            f"table {table_name!r} has no version {version!r}; versions run from {oldest} to {head}"
        )
    if version < oldest:
        raise VersionCleanedError(table_name, version, oldest)
    return version


def _moment(table_name: str, as_of: dt.datetime | int | str) -> dt.datetime:
    if isinstance(as_of, dt.datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        return dt.datetime.fromtimestamp(as_of / 1000, tz=dt.UTC)
    if isinstance(as_of, str):
        try:
            parsed = dt.datetime.fromisoformat(as_of)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise InvalidArgumentError(
        f"table {table_name!r}: as_of {as_of!r} is not a time; give a datetime, ISO 8601 text such as "
        "'2026-01-01' or '2026-01-01T12:00:00Z', or epoch milliseconds"
    )


def schema_at(store: MetaStore, table_id: int, version: int, current: pa.Schema) -> pa.Schema:
    """The schema ``version`` was committed with (``current`` if the catalog has no such commit)."""
    commit = store.commits(table_id, version, version)
    return store.schema(table_id, commit[0].schema_id) if commit else current


@contextlib.contextmanager
def unless_cleaned(store: MetaStore, table_id: int, table_name: str, version: int) -> Iterator[None]:
    """Raise ``VersionCleanedError`` if a clean moved past ``version`` while the block read it.

    A clean forgets files in the catalog before deleting them, so a read that raced with it may
    have found a file missing (``StorageError``) or been given an incomplete file list; both show
    as the oldest readable version having moved past ``version`` by the end of the read.
    """
    try:
        yield
    except StorageError as exc:
        _, oldest = store.current_version(table_id)
        if version < oldest:
            raise VersionCleanedError(table_name, version, oldest) from exc
        raise
    _, oldest = store.current_version(table_id)
    if version < oldest:
        raise VersionCleanedError(table_name, version, oldest)
