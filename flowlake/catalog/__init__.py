"""The catalog: unified metadata for every table, version and commit."""

from flowlake.catalog.base import Commit, DataFile, TableRecord
from flowlake.catalog.catalog import Catalog, connect

__all__ = ["Catalog", "Commit", "DataFile", "TableRecord", "connect"]
