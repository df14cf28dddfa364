r"""The lake's front door: :func:`connect` and :class:`Catalog`, which create, load, list and drop tables.

This module sits above the table layer: :mod:`flowlake.catalog` is pure metadata (the store protocol,
the SQL store, the REST metastore) and knows nothing of :class:`~flowlake.table.table.LakeTable`; the
``Catalog`` here joins a metadata store and a warehouse and hands out ``LakeTable``\ s. Faces (the CLI,
a console) use this module and the public API, never the store's internals.

>>> import pyarrow as pa
>>> import flowlake as fl
>>> cat = fl.connect(catalog="sqlite://", warehouse="memory://front-door-doc", principal="alice")
>>> t = cat.create_table("ods.users", pa.schema([("id", pa.int64()), ("name", pa.string())]),
...                      primary_key=["id"], buckets=2)
>>> t.upsert(pa.table({"id": [1, 2], "name": ["ann", "bob"]})).version
1
>>> cat.list_tables()
['ods.users']
>>> cat.load_table("ods.users").read().sort_by("id").column("name").to_pylist()
['ann', 'bob']
>>> cat.drop_table("ods.users")
>>> cat.table_exists("ods.users")
False
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import sqlalchemy as sa

from flowlake.catalog.access import Privilege
from flowlake.catalog.base import Commit, MetaStore
from flowlake.catalog.engine import create_engine
from flowlake.catalog.engine import redact as _redact
from flowlake.catalog.lineage import LineageNode, freshness_seconds, lineage
from flowlake.catalog.sql import SqlMetaStore
from flowlake.config import Settings
from flowlake.errors import (
    AuthenticationError,
    CatalogError,
    InvalidArgumentError,
    SchemaMismatchError,
    TableExistsError,
    TableNotFoundError,
)
from flowlake.io.fs import Storage, open_storage
from flowlake.names import TableName, validate_consumer, validate_name
from flowlake.table.clustering import ClusterSpec
from flowlake.table.policy import creation_defaults, validate_properties
from flowlake.table.schema import validate_schema
from flowlake.table.services import TableServices
from flowlake.table.table import LakeTable

if TYPE_CHECKING:
    from starlette.applications import Starlette


__all__ = ["Catalog", "Privilege", "connect", "metastore_app", "redact_url"]


class Catalog:
    """Tables by name, over one metadata store and one warehouse. Make one with :func:`connect`."""

    def __init__(self, store: MetaStore, storage: Storage, *, catalog_url: str = "") -> None:
        self.store = store
        self.storage = storage
        self.catalog_url = catalog_url

    def __repr__(self) -> str:
        return f"Catalog(catalog={self.display_url!r}, warehouse={self.storage.uri!r})"

    @property
    def principal(self) -> str:
        """Who this catalog acts as."""
        return self.store.principal

    @property
    def display_url(self) -> str:
        """The catalog URL with any password replaced by ``***``: safe to print or log.

        >>> connect(catalog="sqlite://", warehouse="memory://display-doc").display_url
        'sqlite://'
        """
        return redact_url(self.catalog_url)

    def claim_admin(self) -> str | None:
        """Make this catalog's principal the admin of a catalog that has none; return the admin.

        Only a direct catalog (SQLite, PostgreSQL) has a first admin to claim; through the REST
        metastore the server decides, and this returns None.
        """
        return self.store.claim_admin() if isinstance(self.store, SqlMetaStore) else None

    def sign_in(self, token: str) -> Catalog | None:
        """This catalog acting as the principal whose bearer token is ``token``, or None if unknown.

        A direct catalog looks the token up among its principals (only their SHA-256 is stored); a
        REST metastore catalog passes it to the server, which checks it on every call.

        >>> cat = connect(catalog="sqlite://", warehouse="memory://sign-in-doc")
        >>> token = cat.create_principal("bob")
        >>> cat.sign_in(token).principal, cat.sign_in("not-a-token")
        ('bob', None)
        """
        if isinstance(self.store, SqlMetaStore):
            principal = self.store.principal_for_token(token)
            if principal is None:
                return None
            return type(self)(self.store.as_principal(principal), self.storage, catalog_url=self.catalog_url)
        if self.catalog_url.startswith(("http://", "https://")):
            from flowlake.catalog.rest import RestMetaStore

            try:
                remote = RestMetaStore(self.catalog_url, token)  # asks the server whose token it is
            except (AuthenticationError, CatalogError):
                return None
            return type(self)(remote, self.storage, catalog_url=self.catalog_url)
        return None

    def create_table(
        self,
        name: str,
        schema: pa.Schema,
        *,
        primary_key: list[str] | tuple[str, ...] | None,
        buckets: int = 4,
        partition_by: list[str] | tuple[str, ...] | None = None,
        properties: Mapping[str, str] | None = None,
        exist_ok: bool = False,
    ) -> LakeTable:
        """Create a primary-key table ``namespace.table`` at version 0.

        Args:
            name: ``namespace.table``; both parts lowercase letters, digits and underscores.
            schema: The pyarrow schema; key columns become non-nullable.
            primary_key: Key columns (not floats or bools); ``None`` makes an append table (no key,
                no index, no dedupe: the index-free path for logs and events).
            buckets: Hash buckets; each commit writes at most one log file per bucket.
            partition_by: Append tables only: columns whose values group rows into files (reads
                filtered on them skip other partitions' files).
            properties: Table properties (e.g. ``target_file_rows``); the ``maintain.*`` policy of the
                table services starts at its defaults (see :mod:`flowlake.table.policy`).
            exist_ok: Return the existing table instead of raising ``TableExistsError``.
        """
        qualified = TableName.parse(name)
        if primary_key is not None and not primary_key:
            raise InvalidArgumentError(
                f"table {name!r}: primary_key needs at least one column (or None for an append table)"
            )
        if not isinstance(buckets, int) or not 1 <= buckets <= 4096:
            raise InvalidArgumentError(f"table {name!r}: buckets must be an integer from 1 to 4096")
        key = list(primary_key or [])
        stored = validate_schema(name, schema, key)
        given = {k: str(v) for k, v in (properties or {}).items()}
        validate_properties(given)
        ClusterSpec.from_properties(given).check(name, stored)  # sort_by / cluster_by name columns
        props = {**creation_defaults(), **given}  # the maintenance policy, visible in `status`
        if partition_by:
            if key:
                raise InvalidArgumentError(
                    f"table {name!r}: partition_by is for append tables; key tables are bucketed by key"
                )
            missing = [c for c in partition_by if c not in stored.names]
            if missing:
                raise SchemaMismatchError(name, missing[0], "the partition column is not in the schema")
            props["partition_by"] = ",".join(partition_by)
        for _ in range(3):  # exist_ok: another process may create (or drop) it between the two calls
            try:
                record = self.store.create_table(
                    qualified.namespace, qualified.table, stored, key, 1 if not key else buckets, props
                )
            except TableExistsError:
                if not exist_ok:
                    raise
                try:
                    return self.load_table(name)
                except TableNotFoundError:
                    continue  # dropped after our create lost to it: create it again
            return LakeTable(self.store, self.storage, record)
        raise CatalogError(
            f"table {name!r} was created and dropped again by other processes while this one tried to "
            "create or load it; retry"
        )

    def load_table(self, name: str) -> LakeTable:
        """Open an existing table; raises ``TableNotFoundError``."""
        qualified = TableName.parse(name)
        return LakeTable(self.store, self.storage, self.store.get_table(qualified.namespace, qualified.table))

    def table_exists(self, name: str) -> bool:
        """Whether ``namespace.table`` exists."""
        try:
            self.load_table(name)
        except TableNotFoundError:
            return False
        return True

    def list_tables(self, namespace: str | None = None) -> list[str]:
        """Qualified names of the tables, all or in one namespace, sorted."""
        if namespace is not None:
            validate_name(namespace, kind="namespace")
        return self.store.list_tables(namespace)

    def list_namespaces(self) -> list[str]:
        """Namespaces, sorted."""
        return self.store.list_namespaces()

    def services(
        self,
        tables: str | list[str] = "*",
        *,
        max_jobs: int = 2,
        poll_seconds: float = 1.0,
        lease_seconds: float = 30.0,
        emit: Callable[[str], None] | None = None,
    ) -> TableServices:
        """The table services (compaction, rebalancing, cleaning) for the tables matching ``tables``.

        ``run()`` them until ``stop()`` (what ``flowlake maintain`` does), or ``run_once()``; see
        :class:`~flowlake.table.services.TableServices`. They act as this catalog's principal, and
        call ``emit`` with one line per job (default: the ``flowlake.table.services`` logger).

        >>> cat = connect(catalog="sqlite://", warehouse="memory://services-front-doc")
        >>> cat.services("ods.*", max_jobs=1).run_once()
        []
        """
        return TableServices(
            self.store, self.storage, tables=tables, max_jobs=max_jobs, poll_seconds=poll_seconds,
            lease_seconds=lease_seconds, emit=emit,
        )  # fmt: skip

    # -- grants, principals, audit ------------------------------------------------------------------

    def grant(self, privilege: Privilege, obj: str, principal: str) -> None:
        """Give ``principal`` ``privilege`` (read, write, admin) on ``*``, a namespace or a table."""
        self.store.grant(principal, privilege, obj)

    def revoke(self, privilege: Privilege, obj: str, principal: str) -> bool:
        """Take a grant back; False if there was none."""
        return self.store.revoke(principal, privilege, obj)

    def list_grants(self, principal: str | None = None) -> list[tuple[str, str, str]]:
        """``(principal, privilege, object)`` of every grant, or of one principal's."""
        return self.store.list_grants(principal)

    def create_principal(self, name: str, *, kind: Literal["user", "service"] = "service") -> str:
        """Create a principal (or give it a new token) and return its bearer token for the metastore."""
        return self.store.create_principal(name, kind=kind)

    def revoke_token(self, name: str) -> None:
        """Invalidate a principal's bearer token."""
        self.store.revoke_token(name)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """Who committed, granted or dropped what, and when (newest first)."""
        return self.store.audit_log(limit)

    # -- lineage ------------------------------------------------------------------------------------

    def commits_of(self, table: str) -> list[Commit]:
        """A table's history (for lineage)."""
        return self.load_table(table).history()

    def positions_of(self, table: str) -> dict[str, tuple[Any, int]]:
        """``{source: (position, version)}`` of a table."""
        return self.store.positions(self.load_table(table)._record.id)

    def lineage(self, table: str) -> LineageNode:
        """The upstream graph of ``table``: its sources at their newest positions, recursively."""
        return lineage(self, table, version=self.load_table(table).version)

    def freshness(self, table: str) -> float | None:
        """Seconds between now and the source time of the newest change ``table`` includes."""
        return freshness_seconds(self, table)

    # -- consumers ----------------------------------------------------------------------------------

    def register_consumer(self, name: str, table: str, version: int) -> None:
        """Register (or move) consumer ``name`` at ``version`` of ``table``.

        While registered, ``clean()`` keeps every version from ``version`` on readable, so the
        consumer can always read ``changes(version)``.
        """
        validate_consumer(name)
        t = self.load_table(table)
        t.resolve_version(version)
        self.store.register_consumer(t._record.id, name, version)

    def advance_consumer(self, name: str, table: str, version: int) -> None:
        """Move a registered consumer forward to ``version`` (never backwards)."""
        current = self.consumer_position(name, table)
        if current is None:
            raise InvalidArgumentError(f"consumer {name!r} is not registered on {table!r}; register it first")
        if version < current:
            raise InvalidArgumentError(
                f"consumer {name!r} on {table!r} is at version {current}; it cannot move back to {version}"
            )
        self.register_consumer(name, table, version)

    def consumer_position(self, name: str, table: str) -> int | None:
        """The version consumer ``name`` has consumed of ``table``, or None if it is not registered."""
        return self.list_consumers(table).get(name)

    def list_consumers(self, table: str) -> dict[str, int]:
        """``{consumer: version}`` of a table."""
        return self.store.consumers(self.load_table(table)._record.id)

    def drop_consumer(self, name: str, table: str) -> bool:
        """Forget a consumer (cleaning may then remove what it needed); False if it was not there."""
        return self.store.drop_consumer(self.load_table(table)._record.id, name)

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a table from the catalog and delete its files."""
        qualified = TableName.parse(name)
        try:
            record = self.store.drop_table(qualified.namespace, qualified.table)
        except TableNotFoundError:
            if missing_ok:
                return
            raise
        self.storage.delete_tree(self.storage.path(record.location))


def connect(
    catalog: str | None = None,
    warehouse: str | None = None,
    *,
    principal: str | None = None,
    token: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Catalog:
    """Open a catalog and its warehouse.

    With no arguments: ``FLOWLAKE_CATALOG``/``FLOWLAKE_WAREHOUSE``, then ``flowlake.toml``, then the
    embedded default ``./.flowlake`` (SQLite catalog and a local file warehouse).

    Args:
        catalog: ``sqlite:///path.db``, ``sqlite://`` (in memory) or ``postgresql://user@host/db``.
        warehouse: ``file:///path``, a local path, ``memory://name`` or ``s3://bucket/prefix``.
        principal: Who acts on an embedded catalog (defaults to the local user).
        token: Bearer token for a REST metastore catalog (``http://host:port``; env FLOWLAKE_TOKEN).
        storage_options: Passed to fsspec (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for S3).
    """
    settings = Settings.resolve(catalog=catalog, warehouse=warehouse, principal=principal)
    url = settings.catalog
    if url.startswith(("http://", "https://")):
        from flowlake.catalog.rest import RestMetaStore

        rest = RestMetaStore(url, token or os.environ.get("FLOWLAKE_TOKEN", ""))
        return Catalog(rest, open_storage(settings.warehouse, storage_options), catalog_url=url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url in ("sqlite://", "sqlite:///:memory:"):
        engine = sa.create_engine(
            "sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_engine(url)
    store = SqlMetaStore(engine, principal=settings.principal)
    return Catalog(store, open_storage(settings.warehouse, storage_options), catalog_url=url)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs).

    >>> redact_url("postgresql://flow:secret@db:5432/lake")
    'postgresql://flow:***@db:5432/lake'
    """
    return _redact(url)


def metastore_app(catalog: str, *, max_body_bytes: int | None = None) -> Starlette:
    """The REST metastore (a Starlette app) over the catalog at ``catalog``, for ``flowlake serve``.

    Args:
        catalog: ``sqlite:///path.db`` or ``postgresql://...``: the store the server acts on.
        max_body_bytes: Largest request body accepted; larger ones get 413 (default 64 MiB).
    """
    from flowlake.catalog.rest import DEFAULT_MAX_BODY_BYTES, create_app

    store = SqlMetaStore(create_engine(catalog))
    return create_app(store, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES)
