"""Named consumers (dataflow sources, pins) and who may move them, inside the catalog store.

A consumer holds a table's history from its version on (cleaning keeps what it needs), so moving or
dropping one is a write-like act on the table:

- Registering a new consumer needs ``read`` on the table; the registering principal owns it.
- Moving (re-registering) or dropping a consumer needs its ownership or ``write`` on the table
  (writers run cleaning, which drops expired pins). Consumers from catalogs older than schema 5 have
  no owner: only principals with ``write`` may move or drop them.
- Listing shows every consumer to principals with ``write`` on the table (cleaning must see them
  all), and only their own to everyone else.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowlake.catalog.access import AccessControl, Privilege
from flowlake.catalog.engine import begin_write
from flowlake.catalog.sqltables import consumers as consumers_table
from flowlake.catalog.sqltables import tables
from flowlake.errors import CatalogError, PermissionDeniedError, VersionCleanedError


class ConsumerRegistry(AccessControl):
    """Consumer positions and their ownership checks over the catalog's SQL tables."""

    def _table_name(self, table_id: int) -> str:  # the store provides it
        raise NotImplementedError

    def _allow(self, privilege: Privilege, table_id: int) -> None:  # the store provides it
        raise NotImplementedError

    def _lock_table(self, conn: Connection, table_id: int) -> int:
        """Take the table row's lock (as a commit does) and return its oldest readable version."""
        locked = conn.execute(
            sa.update(tables).where(tables.c.id == table_id).values(oldest_version=tables.c.oldest_version)
        )
        if locked.rowcount != 1:
            raise CatalogError(f"table id {table_id} vanished from the catalog (dropped concurrently?)")
        return int(
            conn.execute(sa.select(tables.c.oldest_version).where(tables.c.id == table_id)).scalar_one()
        )

    def _check_owner(
        self, conn: Connection, table_id: int, name: str, action: str, *, may_write: bool
    ) -> bool:
        """Whether consumer ``name`` exists; raise unless this principal owns it or may write the table."""
        row = conn.execute(
            sa.select(consumers_table.c.owner).where(
                consumers_table.c.table_id == table_id, consumers_table.c.name == name
            )
        ).first()
        if row is None:
            return False
        if row[0] != self.principal and not may_write:
            owner = "no recorded owner" if row[0] is None else f"it belongs to {row[0]!r}"
            detail = f"to {action} consumer {name!r}: {owner}"
            raise PermissionDeniedError(self.principal, "write", self._table_name(table_id), detail=detail)
        return True

    def register_consumer(self, table_id: int, name: str, version: int) -> None:
        """Create or move a named consumer's position on a table.

        Serialized with ``forget_files`` on the table's row lock: a consumer either registers
        before a clean moves the oldest readable version (and the clean sees it) or is refused.

        Raises:
            VersionCleanedError: ``version`` is older than the table's oldest readable version.
            PermissionDeniedError: The consumer exists, belongs to another principal, and this one
                lacks ``write`` on the table.
        """
        self._allow("read", table_id)
        may_write = self.has_privilege("write", self._table_name(table_id))  # not inside the transaction
        now = int(time.time() * 1000)
        with begin_write(self.engine) as conn:
            oldest = self._lock_table(conn, table_id)
            if version < oldest:
                raise VersionCleanedError(self._table_name(table_id), version, oldest)
            if self._check_owner(conn, table_id, name, "move", may_write=may_write):
                conn.execute(
                    sa.update(consumers_table)
                    .where(consumers_table.c.table_id == table_id, consumers_table.c.name == name)
                    .values(version=version, updated_at=now)
                )
            else:
                conn.execute(
                    sa.insert(consumers_table).values(
                        table_id=table_id, name=name, version=version, updated_at=now, owner=self.principal
                    )
                )

    def consumers(self, table_id: int) -> dict[str, int]:
        """``{consumer name: version consumed}``: all of them with ``write`` on the table, else own."""
        self._allow("read", table_id)
        query = sa.select(consumers_table.c.name, consumers_table.c.version).where(
            consumers_table.c.table_id == table_id
        )
        if not self.has_privilege("write", self._table_name(table_id)):
            query = query.where(consumers_table.c.owner == self.principal)
        with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(query)}

    def drop_consumer(self, table_id: int, name: str) -> bool:
        """Forget a consumer (own, or any with ``write`` on the table); False if it did not exist."""
        self._allow("read", table_id)
        may_write = self.has_privilege("write", self._table_name(table_id))
        with begin_write(self.engine) as conn:
            if not self._check_owner(conn, table_id, name, "drop", may_write=may_write):
                return False
            return bool(
                conn.execute(
                    sa.delete(consumers_table).where(
                        consumers_table.c.table_id == table_id, consumers_table.c.name == name
                    )
                ).rowcount
            )
