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
    as_of: dt.datetime | int | None = None,
) -> int:
    """The version to read: ``version``, or the newest at time ``as_of``, or the head.

    ``as_of`` is a datetime (naive means UTC) or epoch milliseconds.
    """
    head, oldest = store.current_version(table_id)
    if version is not None and as_of is not None:
        raise InvalidArgumentError("pass either version= or as_of=, not both")
    if as_of is not None:
        if isinstance(as_of, dt.datetime):
            moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)
            as_of = int(moment.timestamp() * 1000)
        found = store.version_at(table_id, int(as_of))
        if found is None:
            raise VersionNotFoundError(
                f"table {table_name!r} has no version committed at or before {as_of} ms; "
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
