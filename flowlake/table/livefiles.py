"""A table's live file list, kept up with the commits instead of listed again for every version.

A writer whose key state is incomplete looks up old keys in the table's files at every commit; a
table of 10M rows holds thousands of files, and listing them from the catalog per commit cost more
than the lookups. :class:`LiveFiles` keeps the list of the newest version it was asked for and moves
it to a later version with the files the commits in between added or removed
(``MetaStore.files_changed_between``): a cost in proportion to what changed. A clean forgets the
records of removed files, so a move from a version a clean passed lists the files again.

>>> import flowlake as fl, pyarrow as pa
>>> cat = fl.connect(catalog="sqlite://", warehouse="memory://livefiles-doc")
>>> t = cat.create_table("demo.t", pa.schema([("id", pa.int64())]), primary_key=["id"])
>>> _ = t.upsert(pa.table({"id": [1]}))
>>> live = LiveFiles(cat.store, t.refresh()._record.id, "demo.t")
>>> n = len(live.at(t.version))
>>> _ = t.upsert(pa.table({"id": [2]}))
>>> len(live.at(t.refresh().version)) == n + 1 == len(cat.store.live_files(t._record.id, t.version))
True
"""

from __future__ import annotations

from flowlake.catalog.base import DataFile, MetaStore
from flowlake.errors import VersionCleanedError
from flowlake.table.versions import unless_cleaned


class LiveFiles:
    """The live files of one table at the version last asked for (see the module)."""

    def __init__(self, store: MetaStore, table_id: int, table_name: str) -> None:
        self.store = store
        self.table_id = table_id
        self.table_name = table_name
        self.version: int | None = None
        self.files: list[DataFile] = []

    def at(self, version: int) -> list[DataFile]:
        """The files that make up ``version``, in the order they were added (``live_files``' order;
        a file's ``removed_version`` is as first seen)."""
        if self.version == version:
            return self.files
        files = self._moved(self.version, version) if self.version is not None else None
        if files is None:
            files = self.store.live_files(self.table_id, version)
        self.version, self.files = version, files
        return files

    def _moved(self, start: int, end: int) -> list[DataFile] | None:
        """The list at ``end`` from the one at ``start``; None when that cannot be done (``end`` is
        older, or a clean forgot files removed after ``start``)."""
        if end < start:
            return None
        try:
            with unless_cleaned(self.store, self.table_id, self.table_name, start):
                changed = self.store.files_changed_between(self.table_id, start, end)
        except VersionCleanedError:
            return None
        gone = {f.path for f in changed if f.removed_version is not None and f.removed_version <= end}
        kept = [f for f in self.files if f.path not in gone]
        return kept + [f for f in changed if f.added_version > start and f.path not in gone]
