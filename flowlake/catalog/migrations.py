"""Versioned upgrades of the catalog's own tables.

The catalog records its schema version in ``flowlake_meta``. Opening a catalog written by an older
flowlake runs every migration from its version up to :data:`SCHEMA_VERSION`, in one transaction,
after ``create_all`` has added any tables that did not exist yet; opening one written by a newer
flowlake is refused with the command to run. Each migration is a function of the connection.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from flowlake.catalog.sqltables import FIRST_ADMIN, SCHEMA_VERSION, grants, meta


def _v1_to_v2(conn: sa.Connection) -> None:
    """Version 2 added positions, consumers, commit keys, principals, grants and the audit log.

    ``create_all`` creates those tables; the first writer becomes admin (see
    :mod:`flowlake.catalog.access`). Nothing in the version-1 tables changes.
    """
    del conn


def _v2_to_v3(conn: sa.Connection) -> None:
    """Version 3 added the scalable hash index: ``flowlake_tables.bucket_map`` (null = initial map)."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns("flowlake_tables")}
    if "bucket_map" not in columns:
        conn.execute(sa.text("ALTER TABLE flowlake_tables ADD COLUMN bucket_map TEXT"))


def _v3_to_v4(conn: sa.Connection) -> None:
    """Version 4 records a CRC-32 per data file (``flowlake_files.checksum``; null for older files)."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns("flowlake_files")}
    if "checksum" not in columns:
        conn.execute(sa.text("ALTER TABLE flowlake_files ADD COLUMN checksum BIGINT"))


def _v4_to_v5(conn: sa.Connection) -> None:
    """Version 5 records who registered each consumer and who became the first admin.

    Consumers registered before have no owner (``flowlake_consumers.owner`` null); only principals
    with ``write`` on their table may move or drop them (an owner-less consumer cannot be claimed by
    a reader). A catalog that already has grants records its bootstrap admin as the first admin, so
    revoking every grant later never lets the next writer become admin.
    """
    columns = {c["name"] for c in sa.inspect(conn).get_columns("flowlake_consumers")}
    if "owner" not in columns:
        conn.execute(sa.text("ALTER TABLE flowlake_consumers ADD COLUMN owner VARCHAR(255)"))
    first = conn.execute(
        sa.select(grants.c.principal).where(grants.c.granted_by == "bootstrap").limit(1)
    ).scalar()
    any_grant = conn.execute(sa.select(grants.c.principal).limit(1)).scalar()
    recorded = conn.execute(sa.select(meta.c.value).where(meta.c.key == FIRST_ADMIN)).scalar()
    if recorded is None and any_grant is not None:
        conn.execute(sa.insert(meta).values(key=FIRST_ADMIN, value=str(first or "(before schema 5)")))


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
}
"""``{from_version: migration to from_version + 1}``."""


def upgrade(conn: sa.Connection, found: int) -> None:
    """Run the migrations from ``found`` to :data:`SCHEMA_VERSION` and record the new version."""
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
