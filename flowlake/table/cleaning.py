"""Running a clean: move the oldest readable version forward and delete the files nothing needs.

:mod:`flowlake.table.maintenance` holds the pure rules (stale instants, orphan files); this module
applies them to a table. The order matters, because writers, readers and pins keep going meanwhile:

1. the data directory is listed before the inflight instants and the referenced files are read, so a
   writer that begins after the listing cannot lose its files;
2. inflight instants older than the grace period are aborted before the referenced files are read, so
   a stale writer has either completed by then (its files are referenced) or can never complete;
3. the catalog forgets the obsolete files (and moves the oldest readable version) before they are
   deleted, so no reader is directed to a deleted file; it refuses if a consumer registered below the
   new oldest version meanwhile, and the clean then recomputes its horizon.
"""

from __future__ import annotations

import contextlib
import logging
import time

from flowlake.catalog.base import MetaStore, TableRecord
from flowlake.errors import CommitConflictError
from flowlake.io.fs import Storage
from flowlake.table import maintenance
from flowlake.table.fileparts import physical_path, physical_paths
from flowlake.table.pins import pin_expired

_log = logging.getLogger(__name__)


def clean(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    *,
    retain_last: int,
    orphan_grace_seconds: float,
    retain_for_seconds: float = 0.0,
    consumer_max_lag_seconds: float = 0.0,
) -> maintenance.CleanResult:
    """Delete the files no version among the last ``retain_last`` (or a consumer's) needs, and orphans.

    With ``retain_for_seconds``, every version committed that recently also stays readable, and so
    does the version that was current at the start of that window (``read(as_of=...)`` needs it).
    With ``consumer_max_lag_seconds``, a consumer or pin at a version older than the one current that
    long ago is dropped first (see :func:`clean_horizon`).
    """
    now = time.time()
    listed = list_data_files(storage, record)  # before inflight and referenced are read (see orphan_paths)
    inflight = store.inflight_instants(record.id)
    stale = maintenance.stale_instants(inflight, grace_seconds=orphan_grace_seconds, now=now)
    if stale:
        # before the referenced files are read: a stale writer has either completed by then (its
        # files are referenced) or can never complete (its instant is gone), so no committed file
        # is taken for an orphan
        store.abort_stale_inflight(record.id, stale)
    for attempt in range(5):
        keep_from = clean_horizon(
            store,
            record,
            retain_last,
            now,
            retain_for_seconds=retain_for_seconds,
            consumer_max_lag_seconds=consumer_max_lag_seconds,
        )
        referenced = store.all_file_paths(record.id)
        needed = {f.path for f in store.live_files(record.id, keep_from)}
        obsolete = [f for f in store.retired_files(record.id, keep_from) if f.path not in needed]
        try:
            # the catalog first: once forgotten, no reader is directed to a file we then delete; it
            # refuses if a consumer registered below keep_from since we read the consumers
            store.forget_files(record.id, [f.path for f in obsolete], keep_from)
        except CommitConflictError:
            if attempt == 4:
                raise
            continue
        break
    # a shared log file goes once no entry names any of its parts (parts are only ever added with
    # their file, so the entries read before forgetting are all that can name it)
    forgotten = {f.path for f in obsolete}
    still_named = physical_paths(p for p in referenced if p not in forgotten)
    sizes = {physical_path(f.path): f.size for f in obsolete}
    gone = sorted(set(sizes) - still_named)
    orphans, _ = maintenance.orphan_paths(
        listed, physical_paths(referenced), inflight, grace_seconds=orphan_grace_seconds, now=now
    )
    for path in gone + orphans:
        with contextlib.suppress(FileNotFoundError):
            storage.fs.delete_file(storage.path(path))
    return maintenance.CleanResult(
        oldest_version=keep_from,
        files_deleted=len(gone),
        bytes_deleted=sum(sizes[p] for p in gone),
        orphans_deleted=len(orphans),
    )


def clean_horizon(
    store: MetaStore,
    record: TableRecord,
    retain_last: int,
    now: float,
    *,
    retain_for_seconds: float = 0.0,
    consumer_max_lag_seconds: float = 0.0,
) -> int:
    """The oldest version a clean keeps: ``head - retain_last + 1``, or older for ``retain_for_seconds``
    (the version current that long ago), or the oldest consumer/pin.

    Pins past their TTL are dropped first, and so (with ``consumer_max_lag_seconds``) is every consumer
    or pin at a version older than the one current ``consumer_max_lag_seconds`` ago: registering a
    consumer needs only ``read``, so without that bound any reader could keep the table's history
    (and its storage) forever. A flow whose consumer was dropped re-registers at its next snapshot if
    its version is still readable, and otherwise gets ``VersionCleanedError`` when it resumes.
    """
    head, oldest = store.current_version(record.id)
    keep_from = max(oldest, head - retain_last + 1)
    if retain_for_seconds > 0:
        at_start = store.version_at(record.id, int((now - retain_for_seconds) * 1000))
        keep_from = max(oldest, min(keep_from, oldest if at_start is None else at_start))
    consumed = store.consumers(record.id)
    floor = None
    if consumer_max_lag_seconds > 0:
        floor = store.version_at(record.id, int((now - consumer_max_lag_seconds) * 1000))
    for name in list(consumed):
        lagging = floor is not None and consumed[name] < floor
        if lagging or pin_expired(name, now=now):
            if lagging:
                _log.warning(
                    "dropping consumer %r of %s: it is at version %d, older than version %d (current "
                    "%s ago, maintain.clean.consumer_max_lag)",
                    name, record.name, consumed[name], floor, f"{consumer_max_lag_seconds:g}s",
                )  # fmt: skip
            store.drop_consumer(record.id, name)
            del consumed[name]
    if consumed:  # a consumer at version v still reads changes(v, ...): keep v readable
        keep_from = max(oldest, min(keep_from, *consumed.values()))
    return keep_from


def list_data_files(storage: Storage, record: TableRecord) -> list[tuple[str, float]]:
    """Every file under the table's data directory: (path relative to the storage root, mtime)."""
    root = storage.path(record.location, "data")
    out = []
    for info in storage.list_files(root):
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        out.append((storage.relative(info.path), mtime))
    return out
