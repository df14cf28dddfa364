"""``flowlake serve --pg PORT``: the PostgreSQL wire protocol (v3) for psql, psycopg, JDBC and BI tools.

A client signs in with a principal's name as user and its metastore token (``flowlake token NAME``) as
password (cleartext authentication: bind loopback, or put it behind a TLS-terminating proxy). Queries
run as that principal:

- a SELECT over catalog tables (``select * from dws.shop_gmv_minute``) runs in the same sandbox as
  ``flowlake sql`` (:func:`flowlake.sql.sandbox.run_query`), with the principal's grants;
- ``SET as_of = '2026-01-01T12:00:00Z'`` (or a version, for one-table queries) makes later queries
  read that cut (time travel); ``SET as_of = DEFAULT`` reads the heads again;
- catalog introspection (``information_schema``, ``pg_catalog`` as psql's ``\\dt`` sends it) runs in a
  sandboxed DuckDB holding *empty* copies of the tables the principal may read, so it lists schemas,
  tables and columns and can never return a row of data;
- other ``SET``, ``BEGIN``/``COMMIT``/``ROLLBACK`` and ``DISCARD`` are accepted and do nothing.

Only text format is spoken; the simple and the extended query protocols are both supported (text
parameters are bound as quoted literals). Every message is bounded (``max_message_bytes``, default
1 MiB): a longer one is answered with an error and the connection closed; a malformed startup packet
gets an error, never a crash of the server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import logging
import re
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import pyarrow as pa

from flowlake.errors import (
    FlowlakeError,
    InvalidArgumentError,
    PermissionDeniedError,
    SqlSandboxError,
    TableNotFoundError,
)
from flowlake.lake import Catalog
from flowlake.ui.auth import token_login
from flowlake.ui.data import acting_as

_log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES: Final = 1024 * 1024
"""Default bound on one protocol message (a query text is one message)."""
MAX_STARTUP_BYTES: Final = 10_000
MAX_CONNECTIONS: Final = 64
HANDSHAKE_SECONDS: Final = 15.0
PROTOCOL_V3: Final = 196608
SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102
SERVER_VERSION: Final = "15.0 (flowlake)"

_TYPE_OIDS: Final = (
    (pa.types.is_boolean, 16),
    (pa.types.is_int8, 21),
    (pa.types.is_int16, 21),
    (pa.types.is_int32, 23),
    (pa.types.is_int64, 20),
    (pa.types.is_unsigned_integer, 1700),
    (pa.types.is_float32, 700),
    (pa.types.is_floating, 701),
    (pa.types.is_decimal, 1700),
    (pa.types.is_date, 1082),
    (pa.types.is_time, 1083),
    (pa.types.is_binary, 17),
    (pa.types.is_large_binary, 17),
    (pa.types.is_duration, 1186),
)
_SET = re.compile(
    r"^\s*set\s+(?:session\s+|local\s+)?([a-z_][a-z0-9_.]*)\s*(?:=|\s+to\s+)\s*(.*?)\s*;?\s*$", re.I | re.S
)
_SHOW = re.compile(r"^\s*show\s+([a-z_][a-z0-9_.]*)\s*;?\s*$", re.I)
_NOOP = re.compile(
    r"^\s*(begin|start\s+transaction|commit|end|rollback|abort|discard\s+all|deallocate)\b", re.I
)
_INTROSPECTION = re.compile(r"\b(pg_catalog|information_schema|pg_[a-z_]+)\b", re.I)
_AS_OF_NAMES: Final = ("as_of", "flowlake.as_of")


@dataclass(frozen=True, slots=True)
class Answer:
    """A statement's result: columns (name, Arrow type), rows as text (None for NULL), command tag."""

    columns: tuple[tuple[str, pa.DataType], ...]
    rows: list[list[str | None]]
    tag: str


class PgError(Exception):
    """An error to send to the client as an ErrorResponse with a SQLSTATE."""

    def __init__(self, sqlstate: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.sqlstate, self.message, self.fatal = sqlstate, message, fatal


def type_oid(kind: pa.DataType) -> int:
    """The PostgreSQL type OID that describes an Arrow type (``text`` when none fits better)."""
    if pa.types.is_timestamp(kind):
        return 1184 if kind.tz else 1114
    return next((oid for check, oid in _TYPE_OIDS if check(kind)), 25)


def text_value(value: Any) -> str | None:
    """A value in PostgreSQL's text format."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time | decimal.Decimal | int | float | str):
        return str(value)
    if isinstance(value, dt.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    return orjson.dumps(value, default=str).decode()


def answer_from_table(table: pa.Table, tag: str = "SELECT") -> Answer:
    """An Arrow result as an :class:`Answer`."""
    columns = tuple((f.name, f.type) for f in table.schema)
    data = table.to_pydict()
    rows = [[text_value(data[name][i]) for name, _ in columns] for i in range(table.num_rows)]
    return Answer(columns, rows, f"{tag} {table.num_rows}")


@dataclass
class PgSession:
    """One connection's principal, catalog and settings."""

    principal: str
    catalog: Catalog
    as_of: str | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def run(self, sql: str) -> Answer:
        """Answer one statement (see the module docstring for what is understood)."""
        text = sql.strip().rstrip(";").strip()
        if not text:
            return Answer((), [], "EMPTY")
        if (found := _SET.match(text)) is not None:
            return self._set(found.group(1).lower(), found.group(2))
        if (found := _SHOW.match(text)) is not None:
            name = found.group(1).lower()
            value = self.as_of or "" if name in _AS_OF_NAMES else self._parameter(name)
            return Answer(((name, pa.string()),), [[value]], "SHOW")
        if (found := _NOOP.match(text)) is not None:
            return Answer((), [], found.group(1).split()[0].upper())
        if _INTROSPECTION.search(text):
            return introspect(self.catalog, text)
        from flowlake.sql.sandbox import run_query

        return answer_from_table(run_query(self.catalog, text, as_of=self.as_of).table)

    def _set(self, name: str, raw: str) -> Answer:
        value = raw.strip().strip("'\"")
        if name in _AS_OF_NAMES:
            self.as_of = None if value.lower() in ("", "default", "latest", "head") else value[:64]
        else:
            self.settings[name] = value[:256]
        return Answer((), [], "SET")

    def _parameter(self, name: str) -> str:
        defaults = {"server_version": SERVER_VERSION, "transaction_isolation": "read committed",
                    "standard_conforming_strings": "on", "client_encoding": "UTF8", "timezone": "UTC",
                    "search_path": "public", "datestyle": "ISO, MDY"}  # fmt: skip
        return self.settings.get(name, defaults.get(name, ""))


def introspect(catalog: Catalog, sql: str) -> Answer:
    """Run a catalog-introspection query over empty copies of the readable tables (no data at all)."""
    import duckdb

    from flowlake.sql.sandbox import SANDBOX_SETTINGS

    settings = {k: v for k, v in SANDBOX_SETTINGS.items() if k != "lock_configuration"}
    names = catalog.list_tables()
    with duckdb.connect(":memory:", config=dict(settings)) as con:
        namespaces = sorted({n.split(".", 1)[0] for n in names})
        for name in names:
            namespace, table = name.split(".", 1)  # validated names: quoting them is enough
            empty = catalog.load_table(name).schema.empty_table()
            con.register("__flowlake_empty", empty)
            con.execute(f'create schema if not exists "{namespace}"')
            con.execute(f'create table "{namespace}"."{table}" as select * from __flowlake_empty')
            con.unregister("__flowlake_empty")
        con.execute("create macro pg_get_userbyid(x) as 'flowlake'")
        if _REWRITES[0][0].search(sql):  # only queries that read a shimmed catalog see the shim
            for statement in _PSQL_SHIM:
                con.execute(statement)
        path = ",".join(["main", *namespaces])
        con.execute("set search_path = $1", [path])
        con.execute("set lock_configuration = true")
        rewritten = _pg_dialect(sql)
        try:
            relation: Any = con.sql(rewritten)
            result = pa.table({}) if relation is None else relation.to_arrow_table()
        except duckdb.Error as exc:
            raise PgError("0A000", f"catalog query not supported: {str(exc).splitlines()[0]}") from exc
    return answer_from_table(result)


_SHIMMED: Final = (
    "pg_get_expr", "pg_get_statisticsobjdef_columns", "pg_relation_is_publishable", "array_upper",
    "pg_class", "pg_inherits", "pg_policy", "pg_publication", "pg_publication_rel",
    "pg_publication_namespace", "pg_statistic_ext", "pg_trigger", "pg_roles",
)  # fmt: skip
_PSQL_SHIM: Final = (
    # what psql's \d TABLE reads and DuckDB's pg_catalog lacks: one column, and catalogs that are
    # empty for lake tables (no inheritance, row policies, publications, statistics or triggers)
    "create schema pgshim",
    "create macro pgshim.pg_get_expr(expr, rel, pretty := false) as cast(expr as varchar)",
    "create macro pgshim.pg_get_statisticsobjdef_columns(x) as cast(x as varchar)",
    "create macro pgshim.pg_relation_is_publishable(x) as false",
    "create macro pgshim.array_upper(a, d) as len(a)",
    "create view pgshim.pg_class as select *, false as relforcerowsecurity from pg_catalog.pg_class "
    "where relnamespace not in (select oid from pg_catalog.pg_namespace where nspname = 'pgshim')",
    "create table pgshim.pg_inherits (inhrelid bigint, inhparent bigint, inhseqno integer, "
    "inhdetachpending boolean)",
    "create table pgshim.pg_policy (oid bigint, polname varchar, polrelid bigint, polcmd varchar, "
    "polpermissive boolean, polroles bigint[], polqual varchar, polwithcheck varchar)",
    "create table pgshim.pg_publication (oid bigint, pubname varchar, puballtables boolean)",
    "create table pgshim.pg_publication_rel (oid bigint, prpubid bigint, prrelid bigint, "
    "prqual varchar, prattrs smallint[])",
    "create table pgshim.pg_publication_namespace (oid bigint, pnpubid bigint, pnnspid bigint)",
    "create table pgshim.pg_statistic_ext (oid bigint, stxrelid bigint, stxname varchar, "
    "stxnamespace bigint, stxowner bigint, stxstattarget integer, stxkeys smallint[], stxkind varchar[])",
    "create table pgshim.pg_roles (oid bigint, rolname varchar)",
    "create table pgshim.pg_trigger (oid bigint, tgrelid bigint, tgparentid bigint, tgname varchar, "
    "tgfoid bigint, tgtype smallint, tgenabled varchar, tgisinternal boolean)",
)

_REWRITES: Final = (
    (re.compile(r"pg_catalog\.(" + "|".join(_SHIMMED) + r")\b", re.I), r"pgshim.\1"),
    (re.compile(r"pg_catalog\.(pg_get_userbyid|array_to_string)\b", re.I), r"\1"),
    (re.compile(r"::\s*pg_catalog\.(regtype|regclass|regproc|regnamespace|oid)\b", re.I), ""),
    (re.compile(r"::\s*pg_catalog\.text\b", re.I), "::varchar"),
    (re.compile(r"::\s*pg_catalog\.int2\b", re.I), "::smallint"),
    (re.compile(r"pg_catalog\.(generate_series)\b", re.I), r"\1"),
    (re.compile(r"\s+COLLATE\s+pg_catalog\.default\b", re.I), ""),
    (re.compile(r"OPERATOR\(pg_catalog\.([~!*=<>]+)\)", re.I), r"\1"),
)


def _pg_dialect(sql: str) -> str:
    """PostgreSQL catalog-query spellings DuckDB lacks, rewritten (``COLLATE pg_catalog.default``, ...)."""
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql


def _error_fields(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, PgError):
        return exc.sqlstate, exc.message
    if isinstance(exc, PermissionDeniedError):
        return "42501", str(exc)
    if isinstance(exc, TableNotFoundError):
        return "42P01", str(exc).strip("'\"")
    if isinstance(exc, SqlSandboxError):
        return "42501", str(exc)
    if isinstance(exc, InvalidArgumentError | FlowlakeError):
        return "42601", str(exc)
    _log.error("pg endpoint query failed", exc_info=exc)
    return "XX000", "internal error; the server log has the details"


class _Wire:
    """Reads and writes protocol messages on one connection, with the size bound."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int) -> None:
        self.reader, self.writer, self.limit = reader, writer, limit

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.writer.write(kind + struct.pack("!i", len(payload) + 4) + payload)

    def error(self, sqlstate: str, message: str, *, fatal: bool = False) -> None:
        severity = b"FATAL" if fatal else b"ERROR"
        fields = b"S" + severity + b"\0V" + severity + b"\0C" + sqlstate.encode() + b"\0M"
        self.send(b"E", fields + message.encode("utf-8", "replace")[:8000] + b"\0\0")

    def ready(self) -> None:
        self.send(b"Z", b"I")

    async def message(self) -> tuple[bytes, bytes]:
        head = await self.reader.readexactly(5)
        (length,) = struct.unpack("!i", head[1:])
        if length < 4:
            raise PgError("08P01", f"invalid message length {length}", fatal=True)
        if length - 4 > self.limit:
            raise PgError(
                "54000", f"message of {length - 4:,} bytes is over the server's limit of {self.limit:,}",
                fatal=True,
            )  # fmt: skip
        return head[:1], await self.reader.readexactly(length - 4)

    def answer(self, answer: Answer, *, describe: bool = True) -> None:
        if answer.tag == "EMPTY":
            self.send(b"I")
            return
        if describe and answer.columns:
            self.row_description(answer)
        for row in answer.rows:
            payload = struct.pack("!h", len(row))
            for value in row:
                if value is None:
                    payload += struct.pack("!i", -1)
                else:
                    encoded = value.encode()
                    payload += struct.pack("!i", len(encoded)) + encoded
            self.send(b"D", payload)
        self.send(b"C", answer.tag.encode() + b"\0")

    def row_description(self, answer: Answer) -> None:
        payload = struct.pack("!h", len(answer.columns))
        for name, kind in answer.columns:
            payload += name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, type_oid(kind), -1, -1, 0)
        self.send(b"T", payload)


def _cstrings(data: bytes) -> list[str]:
    return [part.decode("utf-8", "replace") for part in data.split(b"\0")]


def _literal(value: bytes) -> str:
    return "'" + value.decode("utf-8", "replace").replace("'", "''") + "'"


_BINARY_INTS: Final = {21: "!h", 23: "!i", 20: "!q"}


def _binary_literal(value: bytes, oid: int) -> str:
    """A binary-format parameter of a common type as a SQL literal."""
    if oid in _BINARY_INTS and len(value) == struct.calcsize(_BINARY_INTS[oid]):
        return str(struct.unpack(_BINARY_INTS[oid], value)[0])
    if oid == 701 and len(value) == 8:
        return repr(struct.unpack("!d", value)[0])
    if oid == 700 and len(value) == 4:
        return repr(struct.unpack("!f", value)[0])
    if oid == 16 and len(value) == 1:
        return "true" if value != b"\0" else "false"
    if oid in (0, 25, 1043, 19):
        return _literal(value)
    raise PgError("0A000", f"binary parameters of type oid {oid} are not supported; send them as text")


def bind_parameters(sql: str, values: list[str]) -> str:
    """``$1``.. replaced by the bound values' SQL literals (one pass, so values are never re-scanned)."""
    if not values:
        return sql

    def replace(match: re.Match[str]) -> str:
        index = int(match.group(1)) - 1
        if not 0 <= index < len(values):
            raise PgError("08P01", f"parameter ${index + 1} has no bound value")
        return values[index]

    return re.sub(r"\$(\d+)", replace, sql)


class PgServer:
    """The PostgreSQL-wire endpoint over a catalog (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        login: Callable[[str], tuple[str, Catalog] | None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.limit = max_message_bytes
        self.login = login or token_login(catalog)
        self._slots = asyncio.Semaphore(max_connections)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it terminates or errs."""
        wire = _Wire(reader, writer, self.limit)
        if self._slots.locked():
            wire.error("53300", "too many connections to the flowlake endpoint", fatal=True)
            await self._close(writer)
            return
        async with self._slots:
            try:
                session = await asyncio.wait_for(self._handshake(wire), HANDSHAKE_SECONDS)
                if session is not None:
                    await self._serve(wire, session)
            except PgError as exc:
                wire.error(exc.sqlstate, exc.message, fatal=True)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                pass
            except Exception as exc:  # never let one connection take the server down
                _log.error("pg endpoint connection failed", exc_info=exc)
                wire.error("XX000", "internal error; the server log has the details", fatal=True)
            await self._close(writer)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def _handshake(self, wire: _Wire) -> PgSession | None:
        while True:
            head = await wire.reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            if not 8 <= length <= MAX_STARTUP_BYTES:
                raise PgError("08P01", f"invalid startup packet length {length}", fatal=True)
            body = await wire.reader.readexactly(length - 8)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                wire.writer.write(b"N")  # no TLS here: bind loopback or terminate TLS in front
                continue
            if code == CANCEL_REQUEST:
                return None
            if code != PROTOCOL_V3:
                raise PgError(
                    "0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}", fatal=True
                )
            break
        parts = _cstrings(body)
        params = dict(zip(parts[0::2], parts[1::2], strict=False))
        user = params.get("user", "")
        if not user:
            raise PgError("28000", "no user name in the startup packet", fatal=True)
        wire.send(b"R", struct.pack("!i", 3))  # cleartext password: the token
        await wire.writer.drain()
        kind, payload = await wire.message()
        if kind != b"p":
            raise PgError("08P01", "expected a password message", fatal=True)
        token = payload.rstrip(b"\0").decode("utf-8", "replace")
        found = await asyncio.to_thread(self.login, token)
        if found is None or found[0] != user:
            raise PgError("28P01", f'password authentication failed for user "{user[:64]}"', fatal=True)
        wire.send(b"R", struct.pack("!i", 0))
        for key, value in (("server_version", SERVER_VERSION), ("server_encoding", "UTF8"),
                           ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"), ("TimeZone", "UTC"),
                           ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
                           ("application_name", params.get("application_name", "")[:64])):  # fmt: skip
            wire.send(b"S", key.encode() + b"\0" + value.encode() + b"\0")
        wire.send(b"K", struct.pack("!ii", secrets.randbits(31), secrets.randbits(31)))
        wire.ready()
        await wire.writer.drain()
        return PgSession(found[0], acting_as(found[1]))

    async def _serve(self, wire: _Wire, session: PgSession) -> None:
        statements: dict[str, str] = {}
        oids: dict[str, list[int]] = {}
        portals: dict[str, tuple[str, Answer | None]] = {}
        failed = False  # extended protocol: after an error, skip to Sync
        while True:
            kind, payload = await wire.message()
            if kind == b"X":
                return
            if kind == b"S":
                failed = False
                wire.ready()
            elif failed:
                pass
            elif kind == b"Q":
                await self._simple(wire, session, payload.rstrip(b"\0").decode("utf-8", "replace"))
            else:
                try:
                    await self._extended(wire, session, kind, payload, (statements, oids), portals)
                except Exception as exc:
                    sqlstate, message = _error_fields(exc)
                    wire.error(sqlstate, message)
                    failed = True
            await wire.writer.drain()

    async def _simple(self, wire: _Wire, session: PgSession, sql: str) -> None:
        try:
            wire.answer(await asyncio.to_thread(session.run, sql))
        except Exception as exc:
            wire.error(*_error_fields(exc))
        wire.ready()

    async def _extended(
        self,
        wire: _Wire,
        session: PgSession,
        kind: bytes,
        payload: bytes,
        prepared: tuple[dict[str, str], dict[str, list[int]]],
        portals: dict[str, tuple[str, Answer | None]],
    ) -> None:
        statements, oids = prepared
        if kind == b"P":
            name, query = _cstrings(payload)[:2]
            offset = len(name.encode()) + len(query.encode()) + 2
            try:
                (count,) = struct.unpack_from("!h", payload, offset)
                oids[name] = list(struct.unpack_from(f"!{count}i", payload, offset + 2))
            except struct.error as exc:
                raise PgError("08P01", "malformed Parse message") from exc
            statements[name] = query
            wire.send(b"1")
        elif kind == b"B":
            portal, statement, values = _parse_bind(payload, oids)
            if statement not in statements:
                raise PgError("26000", f"prepared statement {statement!r} does not exist")
            portals[portal] = (bind_parameters(statements[statement], values), None)
            wire.send(b"2")
        elif kind == b"D":
            await self._describe(wire, session, payload, statements, portals)
        elif kind == b"E":
            name = payload.split(b"\0", 1)[0].decode("utf-8", "replace")
            if name not in portals:
                raise PgError("34000", f"portal {name!r} does not exist")
            sql, cached = portals[name]
            answer = cached if cached is not None else await asyncio.to_thread(session.run, sql)
            wire.answer(answer, describe=False)
        elif kind == b"C":
            target, name = payload[:1], payload[1:].rstrip(b"\0").decode("utf-8", "replace")
            (statements if target == b"S" else portals).pop(name, None)
            wire.send(b"3")
        elif kind == b"H":
            pass
        else:
            raise PgError("0A000", f"protocol message {kind!r} is not supported")

    @staticmethod
    async def _describe(
        wire: _Wire,
        session: PgSession,
        payload: bytes,
        statements: dict[str, str],
        portals: dict[str, tuple[str, Answer | None]],
    ) -> None:
        target, name = payload[:1], payload[1:].rstrip(b"\0").decode("utf-8", "replace")
        if target == b"S":
            query = statements.get(name)
            if query is None:
                raise PgError("26000", f"prepared statement {name!r} does not exist")
            count = len(set(re.findall(r"\$(\d+)", query)))
            wire.send(b"t", struct.pack("!h", count) + struct.pack("!i", 25) * count)
            wire.send(b"n")  # columns are known once bound: clients then describe the portal
            return
        sql, _ = portals.get(name, ("", None))
        answer = await asyncio.to_thread(session.run, sql)
        portals[name] = (sql, answer)
        if answer.columns:
            wire.row_description(answer)
        else:
            wire.send(b"n")


def _parse_bind(payload: bytes, oids: dict[str, list[int]]) -> tuple[str, str, list[str]]:
    """Portal, statement and the parameters of a Bind message as SQL literals."""
    try:
        portal_end = payload.index(b"\0")
        statement_end = payload.index(b"\0", portal_end + 1)
        portal = payload[:portal_end].decode()
        statement = payload[portal_end + 1 : statement_end].decode()
        offset = statement_end + 1
        (formats,) = struct.unpack_from("!h", payload, offset)
        codes = struct.unpack_from(f"!{formats}h", payload, offset + 2)
        offset += 2 + 2 * formats
        (count,) = struct.unpack_from("!h", payload, offset)
        offset += 2
        types = oids.get(statement, [])
        values: list[str] = []
        for i in range(count):
            (size,) = struct.unpack_from("!i", payload, offset)
            offset += 4
            if size < 0:
                values.append("NULL")
                continue
            if offset + size > len(payload):
                raise PgError("08P01", "malformed Bind message")
            raw = payload[offset : offset + size]
            offset += size
            binary = bool(codes[i] if len(codes) > 1 else (codes[0] if codes else 0))
            values.append(
                _binary_literal(raw, types[i] if i < len(types) else 0) if binary else _literal(raw)
            )
    except (ValueError, struct.error, UnicodeDecodeError, IndexError) as exc:
        raise PgError("08P01", "malformed Bind message") from exc
    return portal, statement, values


@dataclass
class RunningPgServer:
    """A PG-wire endpoint on a background thread; :meth:`stop` ends it."""

    host: str
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def stop(self) -> None:
        """Stop accepting and close the event loop's thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def start_pg_server(
    catalog: Catalog, *, host: str = "127.0.0.1", port: int = 5433, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> RunningPgServer:
    """Serve the PG-wire endpoint on ``host:port`` from a daemon thread (returns once it listens)."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            server = PgServer(catalog, max_message_bytes=max_message_bytes)
            ready["server"] = loop.run_until_complete(asyncio.start_server(server.handle, host, port))
        except OSError as exc:
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        ready["server"].close()

    thread = threading.Thread(target=run, name="flowlake-pg", daemon=True)
    thread.start()
    started.wait(10)
    if "server" not in ready:
        raise InvalidArgumentError(f"the PG endpoint cannot listen on {host}:{port}: {ready.get('error')}")
    return RunningPgServer(host, port, loop, thread)
