"""Principals, grants and the audit log, enforced inside the catalog store.

Privileges are ``read`` < ``write`` < ``admin`` (each implies the ones before it) on an object: ``*``
(the whole catalog), a namespace (``ods``) or a table (``ods.orders``); a grant on a namespace covers
its tables. Checks happen in the store itself. Behind the REST metastore, which runs the store on
the server as the principal of the request's token, they are a security boundary a client cannot
skip; with a direct catalog (SQLite file, PostgreSQL DSN) the principal is whatever the process is
configured with, so there they guard trusted processes against mistakes, not against their own user.

Bootstrap: a new catalog has no admin. The first principal to *write* to it (create a table,
grant, make a token; ``flowlake init`` does it on purpose) becomes its admin on ``*``, once: the
catalog records its first admin in ``flowlake_meta`` and says so in a log warning. Reading never
makes anyone admin; until there is an admin there is nothing to read, so reads are not refused. A
store serving the REST metastore never bootstraps (its principals come from tokens an admin made).

Grants are cached per process for up to 2 seconds (a revocation takes effect within that time
elsewhere, at once in the process that made it); a denial is always re-checked against the database.

Services authenticate to the REST metastore with bearer tokens; only a SHA-256 of each token is stored.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any, Literal, get_args

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flowlake.catalog.engine import begin_write, insert_if_missing
from flowlake.catalog.sqltables import FIRST_ADMIN, audit, grants, meta, principals
from flowlake.errors import InvalidArgumentError, PermissionDeniedError
from flowlake.names import TableName, validate_name

Privilege = Literal["read", "write", "admin"]
"""What a principal may do with an object."""

_log = logging.getLogger(__name__)
_RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3}
_CACHE_SECONDS = 2.0


def validate_object(obj: str) -> str:
    """Check ``*``, ``namespace`` (or ``namespace.*``) or ``namespace.table``; return the canonical form."""
    if obj == "*":
        return obj
    if obj.endswith(".*") and obj.count(".") == 1:
        return validate_name(obj[:-2], kind="namespace")
    if "." in obj:
        TableName.parse(obj)
    else:
        validate_name(obj, kind="namespace")
    return obj


def validate_principal(name: str) -> str:
    """Principal names: like consumer names (letters, digits, ``_.@-``)."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or not all(c.isalnum() or c in "_.@-" for c in name)
    ):
        raise InvalidArgumentError(f"invalid principal name {name!r}: use letters, digits and _.@-")
    return name


def hash_token(token: str) -> str:
    """The stored form of a bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


class AccessControl:
    """Grant checks, principal management and auditing over the catalog's SQL tables."""

    engine: Engine
    principal: str

    def _init_access(self) -> None:
        self._grant_cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._claimed = False
        self._may_bootstrap = True

    def _unclaimed(self) -> bool:
        """Whether the catalog has never had an admin (no first admin recorded, no grant at all)."""
        if not self._claimed:
            with self.engine.connect() as conn:
                recorded = conn.execute(sa.select(meta.c.value).where(meta.c.key == FIRST_ADMIN)).first()
                granted = conn.execute(sa.select(sa.func.count()).select_from(grants)).scalar_one()
            self._claimed = recorded is not None or granted > 0
        return not self._claimed

    def _claim(self) -> bool:
        """Make this principal the catalog's first admin, unless someone already is."""
        now = int(time.time() * 1000)
        try:
            with begin_write(self.engine) as conn:
                if conn.execute(sa.select(sa.func.count()).select_from(grants)).scalar_one() > 0:
                    return False
                conn.execute(sa.insert(meta).values(key=FIRST_ADMIN, value=self.principal))  # once only
                self._ensure_principal(conn, self.principal, "user")
                conn.execute(
                    sa.insert(grants).values(
                        principal=self.principal, object="*", privilege="admin", granted_by="bootstrap",
                        granted_at=now,
                    )
                )  # fmt: skip
                self._audit(conn, "bootstrap_admin", "*", {"principal": self.principal})
        except sa.exc.IntegrityError:  # another process claimed it first
            return False
        finally:
            self._claimed = True
            self._grant_cache.pop(self.principal, None)
        _log.warning(
            "principal %r is now the admin of catalog %s (the first to write to it); give others "
            "access with `flowlake grant`",
            self.principal, self.engine.url.render_as_string(hide_password=True),
        )  # fmt: skip
        return True

    def claim_admin(self) -> str | None:
        """Make this principal the admin of a catalog that has none (``flowlake init``).

        Returns:
            The catalog's first admin (this principal, or whoever claimed it before; None for
            catalogs older than schema 5 whose first admin was not recorded).
        """
        if self._may_bootstrap and self._unclaimed():
            self._claim()
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(meta.c.value).where(meta.c.key == FIRST_ADMIN)).scalar()
        return None if found is None else str(found)

    def _ensure_principal(self, conn: sa.Connection, name: str, kind: str) -> None:
        insert_if_missing(
            conn, principals, {"name": name, "kind": kind, "created_at": int(time.time() * 1000)}
        )

    def _grants_of(self, principal: str) -> dict[str, int]:
        cached = self._grant_cache.get(principal)
        if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
            return cached[1]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(grants.c.object, grants.c.privilege).where(grants.c.principal == principal)
            )
            best: dict[str, int] = {}
            for obj, privilege in rows:
                best[obj] = max(best.get(obj, 0), _RANK[privilege])
        self._grant_cache[principal] = (time.monotonic(), best)
        return best

    def has_privilege(self, privilege: Privilege, obj: str, principal: str | None = None) -> bool:
        """Whether ``principal`` (default: this store's) holds ``privilege`` on ``obj``.

        Asking about another principal needs ``admin`` on ``obj`` (grants are not public).
        """
        if (
            principal is not None
            and principal != self.principal
            and not self._holds(self.principal, "admin", obj)
        ):
            raise PermissionDeniedError(
                self.principal, "admin", obj, detail=f"to look up the grants of {principal!r}"
            )
        return self._holds(principal or self.principal, privilege, obj)

    def _holds(self, who: str, privilege: Privilege, obj: str) -> bool:
        candidates = ["*", obj]
        if "." in obj:
            candidates.append(obj.split(".", 1)[0])
        for fresh in (False, True):  # grants are cached briefly; a denial is always re-checked
            if fresh:
                self._grant_cache.pop(who, None)
            held = self._grants_of(who)
            if max((held.get(c, 0) for c in candidates), default=0) >= _RANK[privilege]:
                return True
        return False

    def authorize(self, privilege: Privilege, obj: str) -> None:
        """Raise :class:`PermissionDeniedError` unless this principal holds ``privilege`` on ``obj``."""
        if self._holds(self.principal, privilege, obj):
            return
        if self._unclaimed():
            if privilege == "read":
                return  # a catalog without an admin has no tables yet
            if self._may_bootstrap:
                self._claim()
        if self._holds(self.principal, privilege, obj):
            return  # granted meanwhile: another process of this principal claimed the catalog first
        raise PermissionDeniedError(self.principal, privilege, obj)

    def record_audit(self, action: str, obj: str, detail: dict[str, Any] | None = None) -> None:
        """Append one line to the audit log."""
        with begin_write(self.engine) as conn:
            self._audit(conn, action, obj, detail)

    def _audit(
        self, conn: sa.Connection, action: str, obj: str, detail: dict[str, Any] | None = None
    ) -> None:
        conn.execute(
            sa.insert(audit).values(
                at=int(time.time() * 1000), principal=self.principal, action=action, object=obj,
                detail=orjson.dumps(detail or {}).decode(),
            )
        )  # fmt: skip

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries, newest first (admin on ``*`` needed)."""
        self.authorize("admin", "*")
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit).order_by(audit.c.id.desc()).limit(limit))
            return [
                {**dict(r._mapping), "detail": orjson.loads(r._mapping["detail"])}
                for r in rows
            ]  # fmt: skip

    def grant(self, principal: str, privilege: Privilege, obj: str) -> None:
        """Give ``principal`` ``privilege`` on ``obj`` (needs admin on ``obj``)."""
        validate_principal(principal)
        if privilege not in get_args(Privilege):
            raise InvalidArgumentError(f"unknown privilege {privilege!r}; use read, write or admin")
        obj = validate_object(obj)
        self.authorize("admin", obj)
        with begin_write(self.engine) as conn:
            self._ensure_principal(conn, principal, "user")
            insert_if_missing(
                conn, grants,
                {
                    "principal": principal, "object": obj, "privilege": privilege,
                    "granted_by": self.principal, "granted_at": int(time.time() * 1000),
                },
            )  # fmt: skip
            self._audit(conn, "grant", obj, {"principal": principal, "privilege": privilege})
        self._grant_cache.pop(principal, None)

    def revoke(self, principal: str, privilege: Privilege, obj: str) -> bool:
        """Take a grant away; False if there was none."""
        obj = validate_object(obj)
        self.authorize("admin", obj)
        with begin_write(self.engine) as conn:
            removed = conn.execute(
                sa.delete(grants).where(
                    grants.c.principal == principal, grants.c.object == obj, grants.c.privilege == privilege
                )
            ).rowcount
            self._audit(conn, "revoke", obj, {"principal": principal, "privilege": privilege})
        self._grant_cache.pop(principal, None)
        return bool(removed)

    def list_grants(self, principal: str | None = None) -> list[tuple[str, str, str]]:
        """``(principal, privilege, object)`` triples, all or of one principal.

        A principal sees its own grants and the grants on objects it administers; nothing else.
        """
        query = sa.select(grants.c.principal, grants.c.privilege, grants.c.object).order_by(
            grants.c.principal, grants.c.object
        )
        if principal is not None:
            query = query.where(grants.c.principal == principal)
        with self.engine.connect() as conn:
            rows = [(a, b, c) for a, b, c in conn.execute(query)]
        return [g for g in rows if g[0] == self.principal or self._holds(self.principal, "admin", g[2])]

    def create_principal(self, name: str, *, kind: Literal["user", "service"] = "service") -> str:
        """Create (or re-key) a principal and return its new bearer token (shown once)."""
        validate_principal(name)
        self.authorize("admin", "*")
        token = "fl_" + secrets.token_urlsafe(32)
        with begin_write(self.engine) as conn:
            self._ensure_principal(conn, name, kind)
            conn.execute(
                sa.update(principals).where(principals.c.name == name).values(token_hash=hash_token(token))
            )
            self._audit(conn, "create_principal", "*", {"principal": name, "kind": kind})
        return token

    def revoke_token(self, name: str) -> None:
        """Invalidate a principal's bearer token."""
        self.authorize("admin", "*")
        with begin_write(self.engine) as conn:
            conn.execute(sa.update(principals).where(principals.c.name == name).values(token_hash=None))
            self._audit(conn, "revoke_token", "*", {"principal": name})

    def principal_for_token(self, token: str) -> str | None:
        """The principal a bearer token belongs to, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(principals.c.name).where(principals.c.token_hash == hash_token(token))
            ).first()
        return None if row is None else str(row[0])
