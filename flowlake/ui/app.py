"""The console's Starlette app: pages, the JSON API, static files, sign-in, and security headers.

Every API call runs as the session's principal through a :class:`~flowlake.ui.data.ConsoleCatalog`,
so the catalog store checks grants on every read; errors come back as ``{"error", "message"}`` with
403 for a missing grant, 404 for a missing table or version, 400 for bad input, and never a traceback
(unexpected errors are logged on the server and answered with 500 and a generic message).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowlake.errors import (
    AuthenticationError,
    FlowlakeError,
    InvalidArgumentError,
    InvalidNameError,
    PermissionDeniedError,
    TableNotFoundError,
    VersionNotFoundError,
)
from flowlake.lake import Catalog
from flowlake.runtime.http import read_body
from flowlake.ui import data, pages
from flowlake.ui.auth import (
    CSRF_HEADER,
    LOGIN_COOKIE,
    LOOPBACK_HOSTS,
    SESSION_COOKIE,
    AuthMode,
    Session,
    Sessions,
    same_secret,
    token_login,
)

_log = logging.getLogger(__name__)

MAX_FORM_BYTES: Final = 16 * 1024
MAX_JSON_BYTES: Final = 256 * 1024
_STATUS: Final[Sequence[tuple[type[FlowlakeError], int]]] = (
    (PermissionDeniedError, 403),
    (AuthenticationError, 401),
    (TableNotFoundError, 404),
    (VersionNotFoundError, 404),
    (InvalidNameError, 400),
)
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'"
)


class SecurityHeaders:
    """ASGI middleware adding CSP, no-framing, no-sniffing, no-referrer and no-store headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
    )


def error_response(exc: BaseException) -> Response:
    """The JSON answer for an error: its class and message for flowlake errors, generic otherwise."""
    if isinstance(exc, FlowlakeError):
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
        return _json({"error": type(exc).__name__, "message": str(exc)}, status)
    _log.error("console request failed", exc_info=exc)
    return _json({"error": "InternalError", "message": "internal error; the server log has the details"}, 500)


def console_app(
    catalog: Catalog,
    *,
    auth: AuthMode = "local",
    allowed_hosts: Sequence[str] | None = None,
    poll_ms: int = 2000,
    session_ttl_seconds: float = 8 * 3600,
) -> Starlette:
    """The web console over ``catalog``.

    Args:
        catalog: The catalog to show. In ``local`` mode the console acts as its principal; in
            ``token`` mode it only uses it to look up tokens, and acts as each token's principal.
        auth: ``local`` (the embedded default, for 127.0.0.1) or ``token`` (sign in with a bearer token).
        allowed_hosts: Host names the console answers to; ``local`` mode defaults to loopback names only.
        poll_ms: How often the overview page refreshes its numbers.
        session_ttl_seconds: How long a sign-in lasts.
    """
    if auth not in ("local", "token"):
        raise InvalidArgumentError(f"auth must be 'local' or 'token', got {auth!r}")
    console = _Console(catalog, auth, poll_ms, Sessions(ttl_seconds=session_ttl_seconds))
    api = console.api
    routes = [
        Route("/", console.page("overview", "Overview", pages.OVERVIEW_BODY)),
        Route("/table/{name}", console.page("table", "Table", pages.TABLE_BODY)),
        Route("/sql", console.page("sql", "SQL", pages.SQL_BODY)),
        Route("/dead-letters", console.page("dead-letters", "Dead letters", pages.DEAD_LETTERS_BODY)),
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login_submit, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Route("/health", _health),
        Route("/api/whoami", api(_whoami)),
        Route("/api/overview", api(lambda s, _: data.overview(s.catalog))),
        Route("/api/tables/{name}", api(lambda s, r: data.table_detail(s.catalog, r.path_params["name"]))),
        Route(
            "/api/tables/{name}/timeline", api(lambda s, r: data.timeline(s.catalog, r.path_params["name"]))
        ),
        Route("/api/tables/{name}/rows", api(_rows)),
        Route("/api/tables/{name}/changes", api(_changes)),
        Route("/api/sql", console.run_sql, methods=["POST"]),
        Route("/api/dead-letters", api(_dead_letters)),
        Mount("/static", StaticFiles(packages=[("flowlake.ui", "static")]), name="static"),
    ]
    if allowed_hosts is not None:
        hosts = list(allowed_hosts)
    else:
        hosts = list(LOOPBACK_HOSTS) if auth == "local" else ["*"]
    middleware = [Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(routes=routes, middleware=middleware)


def _unauthorized() -> Response:
    return _json({"error": "Unauthorized", "message": "sign in first (no or expired session)"}, 401)


class _Console:
    """The endpoints that need the console's settings and sessions."""

    def __init__(self, catalog: Catalog, auth: AuthMode, poll_ms: int, sessions: Sessions) -> None:
        self.catalog = catalog
        self.auth = auth
        self.poll_ms = poll_ms
        self.sessions = sessions
        self.login = token_login(catalog)

    @staticmethod
    def root_of(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def set_cookie(self, response: Response, request: Request, name: str, value: str) -> None:
        response.set_cookie(
            name, value, httponly=True, samesite="strict", secure=request.url.scheme == "https",
            path=self.root_of(request) + "/", max_age=int(self.sessions.ttl_seconds),
        )  # fmt: skip

    def page(self, name: str, title: str, body: str) -> Callable[[Request], Awaitable[Response]]:
        """A page endpoint: the shell with the session's principal and CSRF token (or the sign-in)."""

        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            fresh = None
            if session is None:
                if self.auth != "local":
                    return RedirectResponse(self.root_of(request) + "/login", status_code=303)
                session = fresh = self.sessions.create(self.catalog.principal, self.catalog, local=True)
            extra = {"poll-ms": str(self.poll_ms)}
            if name == "table":
                try:
                    extra["table"] = data.table_name(request.path_params["name"])
                except InvalidNameError as exc:
                    return HTMLResponse(f"<p>{pages.escape(exc)}</p>", status_code=400)
            text = pages.shell(
                page=name, title=extra.get("table", title), root=self.root_of(request),
                principal=session.principal, csrf=session.csrf, local=session.local, body=body, data=extra,
            )  # fmt: skip
            response = HTMLResponse(text)
            if fresh is not None:
                self.set_cookie(response, request, SESSION_COOKIE, fresh.id)
            return response

        return endpoint

    def api(self, handler: Callable[[Session, Request], Any]) -> Callable[[Request], Awaitable[Response]]:
        """A read-only JSON endpoint run in a thread as the session's principal."""

        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                return _unauthorized()
            try:
                result = await asyncio.to_thread(handler, session, request)
            except Exception as exc:  # every error becomes a JSON answer without a traceback
                return error_response(exc)
            return _json(result)

        return endpoint

    async def run_sql(self, request: Request) -> Response:
        """``POST api/sql`` with ``{"sql", "as_of"}`` and the CSRF header."""
        session = self.session_of(request)
        if session is None:
            return _unauthorized()
        if not same_secret(request.headers.get(CSRF_HEADER), session.csrf):
            return _json(
                {"error": "Forbidden", "message": "missing or wrong CSRF token; reload the page"}, 403
            )
        body = await read_body(request, MAX_JSON_BYTES)
        if body is None:
            return _json(
                {"error": "PayloadTooLarge", "message": f"request over {MAX_JSON_BYTES:,} bytes"}, 413
            )
        try:
            args = orjson.loads(body or b"{}")
            if not isinstance(args, dict):
                raise InvalidArgumentError('the body must be a JSON object: {"sql": ..., "as_of": ...}')
            sql, as_of = args.get("sql"), args.get("as_of")
            if not isinstance(sql, str) or not (as_of is None or isinstance(as_of, str | int)):
                raise InvalidArgumentError("sql must be text and as_of a time or version")
            as_of_text = None if as_of in (None, "") else str(as_of)
            result = await asyncio.to_thread(data.run_sql, session.catalog, sql, as_of=as_of_text)
        except orjson.JSONDecodeError:
            return _json({"error": "BadRequest", "message": "the body is not JSON"}, 400)
        except Exception as exc:
            return error_response(exc)
        return _json(result)

    async def login_form(self, request: Request) -> Response:
        """The sign-in form, with a fresh pre-session CSRF cookie."""
        if self.auth == "local":
            return RedirectResponse(self.root_of(request) + "/", status_code=303)
        token = request.cookies.get(LOGIN_COOKIE) or ""
        fresh = len(token) < 32 or len(token) > 128
        if fresh:
            token = secrets.token_urlsafe(32)
        response = HTMLResponse(pages.login_page(root=self.root_of(request), login_csrf=token))
        if fresh:
            self.set_cookie(response, request, LOGIN_COOKIE, token)
        return response

    async def login_submit(self, request: Request) -> Response:
        """Check the form's CSRF token and the bearer token; start a session."""
        root = self.root_of(request)
        if self.auth == "local":
            return RedirectResponse(root + "/", status_code=303)
        form = await _form(request)
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        if form is None or len(expected) < 32 or not same_secret(form.get("csrf"), expected):
            text = pages.login_page(
                root=root, login_csrf=expected, message="the form expired; reload and try again"
            )
            return HTMLResponse(text, status_code=403)
        found = await asyncio.to_thread(self.login, form.get("token", ""))
        if found is None:
            text = pages.login_page(root=root, login_csrf=expected, message="unknown or revoked token")
            return HTMLResponse(text, status_code=401)
        principal, acting = found
        session = self.sessions.create(principal, acting)
        response = RedirectResponse(root + "/", status_code=303)
        self.set_cookie(response, request, SESSION_COOKIE, session.id)
        response.delete_cookie(LOGIN_COOKIE, path=root + "/")
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (the form carries its CSRF token)."""
        session = self.session_of(request)
        form = await _form(request)
        root = self.root_of(request)
        if session is not None:
            if form is None or not same_secret(form.get("csrf"), session.csrf):
                return _json(
                    {"error": "Forbidden", "message": "missing or wrong CSRF token; reload the page"}, 403
                )
            self.sessions.drop(session.id)
        response = RedirectResponse(root + ("/login" if self.auth == "token" else "/"), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=root + "/")
        return response


async def _health(_: Request) -> Response:
    return _json({"status": "ok"})


def _whoami(session: Session, _: Request) -> dict[str, Any]:
    return {"principal": session.principal, "local": session.local}


def _rows(session: Session, request: Request) -> dict[str, Any]:
    q = request.query_params
    return data.rows_at(
        session.catalog, request.path_params["name"], version=data.parse_version(q.get("version")),
        as_of=data.parse_time(q.get("as_of")), limit=data.parse_limit(q.get("limit")),
    )  # fmt: skip


def _changes(session: Session, request: Request) -> dict[str, Any]:
    q = request.query_params
    start = data.parse_version(q.get("start"), "start")
    if start is None:
        raise InvalidArgumentError("start is required: the version the changes come after")
    return data.changes_between(
        session.catalog, request.path_params["name"], start=start,
        end=data.parse_version(q.get("end"), "end"), limit=data.parse_limit(q.get("limit")),
    )  # fmt: skip


def _dead_letters(session: Session, request: Request) -> dict[str, Any]:
    q = request.query_params
    namespaces = data.dead_letter_namespaces(session.catalog)
    namespace = q.get("namespace") or (namespaces[0] if namespaces else "ods")
    return {
        "namespaces": namespaces,
        **data.dead_letters(session.catalog, namespace, limit=data.parse_limit(q.get("limit"))),
    }


async def _form(request: Request) -> dict[str, str] | None:
    """A small url-encoded form as text fields, or None when too big or malformed."""
    from urllib.parse import parse_qsl

    body = await read_body(request, MAX_FORM_BYTES)
    if body is None:
        return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), max_num_fields=16))
    except (UnicodeDecodeError, ValueError):
        return None
