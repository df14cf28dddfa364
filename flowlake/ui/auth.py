"""Who the console acts as: sign-in with a metastore bearer token, sessions, CSRF tokens.

Two modes:

- ``token``: a sign-in form takes a bearer token (``flowlake token NAME``); the server looks up its
  principal and keeps, server side, a catalog acting as that principal. The browser only holds a
  random session id in a cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS). Every
  page and API call runs as that principal, so the catalog store checks its grants.
- ``local``: the embedded default of ``flowlake ui`` on 127.0.0.1, acting as the local principal
  (the process's own, as ``flowlake sql`` does); the page says so. Opening a page makes a session,
  so API calls need the same cookie and CSRF token as in ``token`` mode, and only loopback host
  names are accepted (a DNS-rebinding page cannot reach it).

Every POST carries the session's CSRF token (an ``X-CSRF-Token`` header from the page, or a form
field), compared in constant time; the sign-in form has its own pre-session token (double submit).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from flowlake.lake import Catalog
from flowlake.ui.data import ConsoleCatalog, acting_as

AuthMode = Literal["local", "token"]
"""``local`` acts as the process's principal; ``token`` signs in with a metastore bearer token."""

SESSION_COOKIE: Final = "flowlake_session"
LOGIN_COOKIE: Final = "flowlake_login"
CSRF_HEADER: Final = "x-csrf-token"
MAX_TOKEN_CHARS: Final = 512


@dataclass
class Session:
    """One signed-in browser: its principal, its catalog and its CSRF token."""

    id: str
    principal: str
    catalog: ConsoleCatalog
    csrf: str
    expires_at: float
    local: bool = False


@dataclass
class Sessions:
    """Sessions in memory (a restart signs everyone out), bounded and expiring."""

    ttl_seconds: float = 8 * 3600
    max_sessions: int = 10_000
    _by_id: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, principal: str, catalog: Catalog, *, local: bool = False) -> Session:
        """A new session with fresh random id and CSRF token."""
        session = Session(
            id=secrets.token_urlsafe(32),
            principal=principal,
            catalog=acting_as(catalog),
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self.ttl_seconds,
            local=local,
        )
        with self._lock:
            self._by_id[session.id] = session
            while len(self._by_id) > self.max_sessions:
                self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, malformed or expired)."""
        if not session_id or len(session_id) > 128:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires_at < time.time():
                del self._by_id[session_id]
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        """Sign a session out."""
        with self._lock:
            self._by_id.pop(session_id or "", None)


def token_login(base: Catalog) -> Callable[[str], tuple[str, Catalog] | None]:
    """A function that turns a bearer token into ``(principal, catalog acting as it)``, or None.

    For a SQL catalog the token is looked up in the catalog's principals (only their SHA-256 is
    stored) and the catalog acts as its principal; for a REST metastore the token is passed through,
    so the metastore checks it and acts as its principal on every call.
    """

    def login(token: str) -> tuple[str, Catalog] | None:
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            return None
        signed_in = base.sign_in(token)
        return None if signed_in is None else (signed_in.principal, signed_in)

    return login


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    return bool(given) and secrets.compare_digest(str(given).encode(), expected.encode())


LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1", "[::1]")
"""Host names a ``local``-mode console answers to."""
