"""The REST metastore: ``flowlake serve`` on the server side, :class:`RestMetaStore` on the client side.

Every catalog operation is one ``POST /v1/rpc/<method>`` with JSON arguments (see
:mod:`flowlake.catalog.wire`). A bearer token identifies the principal; the server runs the same SQL
store as an embedded catalog, acting as that principal, so grants are enforced on the server and a
client cannot skip them. Missing or unknown tokens get 401, missing grants 403 (with the same message
an embedded catalog would give), and every other flowlake error comes back as its own exception class.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, Literal

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flowlake import errors
from flowlake.catalog.base import Commit, CommitRequest, DataFile, JobState, Operation, TableRecord
from flowlake.catalog.sql import SqlMetaStore
from flowlake.catalog.wire import check_arguments, decode, encode
from flowlake.errors import AuthenticationError, CatalogError, FlowlakeError, WireFormatError
from flowlake.runtime.http import read_body

RPC_METHODS: frozenset[str] = frozenset(
    {
        "get_table", "create_table", "drop_table", "list_tables", "list_namespaces", "begin_commit",
        "abort_commit", "complete_commit", "find_token", "current_version", "commits", "version_at",
        "live_files", "files_changed_between", "log_files_between", "schema", "inflight_instants",
        "forget_files", "all_file_paths", "retired_files", "abort_stale_inflight", "source_position",
        "positions", "register_consumer", "consumers", "drop_consumer", "authorize", "has_privilege",
        "grant", "revoke", "list_grants", "create_principal", "revoke_token", "audit_log",
        "set_table_properties", "acquire_lease", "renew_lease", "release_lease", "job_states",
    }
)  # fmt: skip
"""The store methods the metastore exposes; nothing else is callable."""

_STATUS: dict[type[FlowlakeError], int] = {
    errors.TableNotFoundError: 404,
    errors.VersionNotFoundError: 404,
    errors.TableExistsError: 409,
    errors.CommitConflictError: 409,
    errors.PermissionDeniedError: 403,
    errors.InvalidNameError: 400,
}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error_payload(exc: FlowlakeError) -> dict[str, Any]:
    attrs = {k: encode(v) for k, v in vars(exc).items() if not k.startswith("_")}
    return {"error": type(exc).__name__, "message": str(exc), "attrs": attrs}


DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body the metastore reads (``flowlake serve --max-body-mb``); a commit request
grows with the keys it writes (about 11 bytes per key as base64 hashes)."""


def create_app(store: SqlMetaStore, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """The metastore ASGI app over ``store`` (whose own principal is only used for token lookups).

    Args:
        store: The catalog; each request runs as the principal of its bearer token.
        max_body_bytes: Requests with larger bodies get 413 without being read further.
    """

    async def rpc(request: Request) -> Response:
        method = request.path_params["method"]
        if method not in RPC_METHODS and method != "whoami":
            return _json({"error": "NotFound", "message": f"no catalog method {method!r}"}, 404)
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        principal = store.principal_for_token(token) if token else None
        if principal is None:
            reason = "missing bearer token" if not token else "unknown or revoked token"
            return _json({"error": "Unauthorized", "message": reason}, 401)
        body = await read_body(request, max_body_bytes)
        if body is None:
            message = (
                f"request body over {max_body_bytes:,} bytes; write smaller batches, or start the "
                "metastore with a larger `flowlake serve --max-body-mb`"
            )
            return _json({"error": "PayloadTooLarge", "message": message}, 413)
        try:
            args = decode(orjson.loads(body or b"{}"))
            if not isinstance(args, dict):
                raise WireFormatError("the body must be a JSON object of named arguments")
        except (orjson.JSONDecodeError, WireFormatError) as exc:
            return _json({"error": "BadRequest", "message": f"bad request body for {method}: {exc}"}, 400)
        if method == "whoami":
            return _json({"result": principal})
        acting = store.as_principal(principal)
        try:
            check_arguments(method, getattr(acting, method), args)
            result = await asyncio.to_thread(_invoke, getattr(acting, method), args)
        except FlowlakeError as exc:
            return _json(_error_payload(exc), _STATUS.get(type(exc), 400))
        except TypeError as exc:
            return _json({"error": "BadRequest", "message": f"bad arguments for {method}: {exc}"}, 400)
        return _json({"result": encode(result)})

    async def health(_: Request) -> Response:
        return _json({"status": "ok"})

    return Starlette(routes=[Route("/v1/rpc/{method}", rpc, methods=["POST"]), Route("/health", health)])


def _invoke(func: Callable[..., Any], args: dict[str, Any]) -> Any:
    signature = inspect.signature(func)
    unknown = set(args) - set(signature.parameters)
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}")
    return func(**args)


def _raise_remote(payload: dict[str, Any], status: int) -> None:
    name = payload.get("error", "")
    message = payload.get("message", "")
    attrs = decode(payload.get("attrs", {}))
    if status == 401:
        raise AuthenticationError(
            f"the metastore refused the request: {message}; ask an admin for a token "
            "(`flowlake token NAME`) and pass it as token= or FLOWLAKE_TOKEN"
        )
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, FlowlakeError):
        exc = kind.__new__(kind)
        Exception.__init__(exc, message)
        for key, value in attrs.items():
            setattr(exc, key, value)
        raise exc
    raise CatalogError(f"metastore error {status}: {message or payload}")


class RestMetaStore:
    """A catalog store that speaks to a ``flowlake serve`` metastore over HTTP."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.principal: str = str(self._call("whoami"))

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            response = self._client.post(f"/v1/rpc/{method}", content=orjson.dumps(encode(kwargs)))
        except httpx.HTTPError as exc:
            raise CatalogError(f"cannot reach the metastore at {self.url}: {exc}") from exc
        payload = orjson.loads(response.content) if response.content else {}
        if response.status_code != 200:
            _raise_remote(payload, response.status_code)
        return decode(payload.get("result"))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # The MetaStore protocol, method by method (explicit, so type checkers and readers see it all).
    def get_table(self, namespace: str, name: str) -> TableRecord:
        return self._call("get_table", namespace=namespace, name=name)  # type: ignore[no-any-return]

    def create_table(self, namespace: str, name: str, schema: Any, primary_key: Any, buckets: int,
                     properties: Any) -> TableRecord:  # fmt: skip
        return self._call(  # type: ignore[no-any-return]
            "create_table", namespace=namespace, name=name, schema=schema, primary_key=list(primary_key),
            buckets=buckets, properties=dict(properties),
        )  # fmt: skip

    def drop_table(self, namespace: str, name: str) -> TableRecord:
        return self._call("drop_table", namespace=namespace, name=name)  # type: ignore[no-any-return]

    def list_tables(self, namespace: str | None = None) -> list[str]:
        return self._call("list_tables", namespace=namespace)  # type: ignore[no-any-return]

    def list_namespaces(self) -> list[str]:
        return self._call("list_namespaces")  # type: ignore[no-any-return]

    def begin_commit(self, table_id: int, instant: str, operation: Operation) -> None:
        self._call("begin_commit", table_id=table_id, instant=instant, operation=operation)

    def abort_commit(self, table_id: int, instant: str) -> None:
        self._call("abort_commit", table_id=table_id, instant=instant)

    def complete_commit(self, table: TableRecord, request: CommitRequest) -> Commit:
        return self._call("complete_commit", table=table, request=request)  # type: ignore[no-any-return]

    def find_token(self, table_id: int, token: str) -> Commit | None:
        return self._call("find_token", table_id=table_id, token=token)  # type: ignore[no-any-return]

    def current_version(self, table_id: int) -> tuple[int, int]:
        return tuple(self._call("current_version", table_id=table_id))

    def commits(self, table_id: int, start: int = 0, end: int | None = None) -> list[Commit]:
        return self._call("commits", table_id=table_id, start=start, end=end)  # type: ignore[no-any-return]

    def version_at(self, table_id: int, timestamp_ms: int) -> int | None:
        return self._call("version_at", table_id=table_id, timestamp_ms=timestamp_ms)  # type: ignore[no-any-return]

    def live_files(self, table_id: int, version: int) -> list[DataFile]:
        return self._call("live_files", table_id=table_id, version=version)  # type: ignore[no-any-return]

    def files_changed_between(self, table_id: int, start: int, end: int) -> list[DataFile]:
        return self._call("files_changed_between", table_id=table_id, start=start, end=end)  # type: ignore[no-any-return]

    def log_files_between(self, table_id: int, start: int, end: int) -> list[DataFile]:
        return self._call("log_files_between", table_id=table_id, start=start, end=end)  # type: ignore[no-any-return]

    def schema(self, table_id: int, schema_id: int) -> Any:
        return self._call("schema", table_id=table_id, schema_id=schema_id)

    def inflight_instants(self, table_id: int) -> list[tuple[str, int]]:
        return [tuple(i) for i in self._call("inflight_instants", table_id=table_id)]

    def forget_files(self, table_id: int, paths: Any, oldest_version: int) -> None:
        self._call("forget_files", table_id=table_id, paths=list(paths), oldest_version=oldest_version)

    def all_file_paths(self, table_id: int) -> set[str]:
        return set(self._call("all_file_paths", table_id=table_id))

    def retired_files(self, table_id: int, up_to_version: int) -> list[DataFile]:
        return self._call("retired_files", table_id=table_id, up_to_version=up_to_version)  # type: ignore[no-any-return]

    def abort_stale_inflight(self, table_id: int, instants: Any) -> None:
        self._call("abort_stale_inflight", table_id=table_id, instants=list(instants))

    def source_position(self, table_id: int, source: str) -> tuple[Any, int] | None:
        found = self._call("source_position", table_id=table_id, source=source)
        return None if found is None else (found[0], int(found[1]))

    def positions(self, table_id: int) -> dict[str, tuple[Any, int]]:
        return {k: (v[0], int(v[1])) for k, v in self._call("positions", table_id=table_id).items()}

    def register_consumer(self, table_id: int, name: str, version: int) -> None:
        self._call("register_consumer", table_id=table_id, name=name, version=version)

    def consumers(self, table_id: int) -> dict[str, int]:
        return self._call("consumers", table_id=table_id)  # type: ignore[no-any-return]

    def drop_consumer(self, table_id: int, name: str) -> bool:
        return bool(self._call("drop_consumer", table_id=table_id, name=name))

    def authorize(self, privilege: Literal["read", "write", "admin"], obj: str) -> None:
        self._call("authorize", privilege=privilege, obj=obj)

    def has_privilege(
        self, privilege: Literal["read", "write", "admin"], obj: str, principal: str | None = None
    ) -> bool:
        return bool(self._call("has_privilege", privilege=privilege, obj=obj, principal=principal))

    def grant(self, principal: str, privilege: Literal["read", "write", "admin"], obj: str) -> None:
        self._call("grant", principal=principal, privilege=privilege, obj=obj)

    def revoke(self, principal: str, privilege: Literal["read", "write", "admin"], obj: str) -> bool:
        return bool(self._call("revoke", principal=principal, privilege=privilege, obj=obj))

    def list_grants(self, principal: str | None = None) -> list[tuple[str, str, str]]:
        return [tuple(g) for g in self._call("list_grants", principal=principal)]

    def create_principal(self, name: str, *, kind: Literal["user", "service"] = "service") -> str:
        return str(self._call("create_principal", name=name, kind=kind))

    def revoke_token(self, name: str) -> None:
        self._call("revoke_token", name=name)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._call("audit_log", limit=limit)  # type: ignore[no-any-return]

    def set_table_properties(self, table_id: int, updates: Any) -> TableRecord:
        return self._call("set_table_properties", table_id=table_id, updates=dict(updates))  # type: ignore[no-any-return]

    def acquire_lease(self, table_id: int, job: str, holder: str, ttl_seconds: float) -> int | None:
        found = self._call(
            "acquire_lease", table_id=table_id, job=job, holder=holder, ttl_seconds=ttl_seconds
        )
        return None if found is None else int(found)

    def renew_lease(self, table_id: int, job: str, holder: str, epoch: int, ttl_seconds: float) -> bool:
        return bool(
            self._call(
                "renew_lease", table_id=table_id, job=job, holder=holder, epoch=epoch, ttl_seconds=ttl_seconds
            )
        )

    def release_lease(
        self, table_id: int, job: str, holder: str, epoch: int, outcome: str, detail: str
    ) -> bool:
        return bool(
            self._call(
                "release_lease", table_id=table_id, job=job, holder=holder, epoch=epoch, outcome=outcome,
                detail=detail,
            )
        )  # fmt: skip

    def job_states(self, table_id: int) -> list[JobState]:
        return self._call("job_states", table_id=table_id)  # type: ignore[no-any-return]
