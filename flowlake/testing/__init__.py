"""Helpers shipped so users test their pipelines the way flowlake tests itself."""

from flowlake.testing.services import free_port, require_service, start_moto_server
from flowlake.testing.tables import apply_changelog, assert_tables_equal, rows_by_key

__all__ = [
    "apply_changelog",
    "assert_tables_equal",
    "free_port",
    "require_service",
    "rows_by_key",
    "start_moto_server",
]
