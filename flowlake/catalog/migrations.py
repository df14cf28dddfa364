"""Versioned upgrades of the catalog's own tables.

The catalog records its schema version in ``flowlake_meta``. Opening a catalog written by an older
flowlake runs every migration from its version up to :data:`SCHEMA_VERSION`, in one transaction,
after ``create_all`` has added any tables that did not exist yet; opening one written by a newer
flowlake is refused with the command to run. Each migration is a function of the connection.

Many processes may open a fresh (or older) catalog at the same moment, as when a cluster starts.
:func:`ensure_schema` makes that safe: a catalog already at :data:`SCHEMA_VERSION` is only read;
otherwise one transaction takes a migration lock (SQLite: the write lock, taken by ``BEGIN
IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock per schema), then checks the version
again, creates what is missing and runs the migrations. Every other opener waits for that lock and
then finds the catalog current. Table creation and the version row commit together (DDL is
transactional on both stores), so a catalog is never seen half-created.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flowlake.catalog.engine import begin_write
from flowlake.catalog.sqltables import FIRST_ADMIN, SCHEMA_VERSION, grants, meta, metadata
from flowlake.errors import CatalogVersionError

MIGRATION_LOCK = "flowlake.catalog.migrate:"
"""PostgreSQL advisory-lock name (the current schema is appended), hashed to the lock's key."""


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


def _v5_to_v6(conn: sa.Connection) -> None:
    """Version 6 added ``flowlake_table_jobs``: the table services' leases and last runs.

    ``create_all`` creates it (empty: no job has run, no lease is held); nothing else changes.
    """
    del conn


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}
"""``{from_version: migration to from_version + 1}``."""


def upgrade(conn: sa.Connection, found: int) -> None:
    """Run the migrations from ``found`` to :data:`SCHEMA_VERSION` and record the new version."""
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def stored_version(conn: sa.Connection) -> int | None:
    """The catalog's recorded schema version, or None for a database without a catalog yet."""
    if not sa.inspect(conn).has_table(meta.name):
        return None
    found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return None if found is None else int(found)


def _lock_migrations(conn: sa.Connection) -> None:
    """Serialize migrators: PostgreSQL by an advisory lock held until this transaction ends.

    SQLite needs nothing here: :func:`~flowlake.catalog.engine.begin_write` began the transaction with
    ``BEGIN IMMEDIATE``, which holds the database's write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:name || coalesce(current_schema(), '')))"),
            {"name": MIGRATION_LOCK},
        )


def ensure_schema(engine: Engine) -> None:
    """Create the catalog's tables or upgrade them to :data:`SCHEMA_VERSION`, safely under concurrency.

    Raises:
        CatalogVersionError: If the catalog was written by a newer flowlake.
    """
    with engine.connect() as conn:
        if stored_version(conn) == SCHEMA_VERSION:
            return  # the common case: nothing to create, no lock taken
    with begin_write(engine) as conn:
        _lock_migrations(conn)
        metadata.create_all(conn, checkfirst=True)  # after the lock: sees what a winner created
        found = stored_version(conn)
        if found is None:
            conn.execute(sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif found > SCHEMA_VERSION:
            raise CatalogVersionError(
                f"the catalog was written by a newer flowlake (catalog schema {found}, this "
                f"flowlake knows {SCHEMA_VERSION}); upgrade flowlake with `pip install -U flowlake`"
            )
        elif found < SCHEMA_VERSION:
            upgrade(conn, found)
