"""The catalog: pure metadata for every table, version and commit.

The store protocol (:mod:`flowlake.catalog.base`), its SQL implementation over SQLite and PostgreSQL,
the REST metastore, grants, consumers, lineage and migrations. It knows nothing of ``LakeTable``: the
user-facing :class:`flowlake.Catalog` (``flowlake.connect``) lives in :mod:`flowlake.lake`, above the
table layer.
"""

from flowlake.catalog.base import Commit, DataFile, TableRecord

__all__ = ["Commit", "DataFile", "TableRecord"]
