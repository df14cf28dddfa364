"""Where a MySQL/MariaDB binlog source starts reading: a GTID state, or a binlog file and offset.

:func:`resume_point` decides from the stored positions of every ODS table (see
:mod:`flowlake.cdc.mysql_gtid`):

- The server has GTIDs and reading by them is not turned off: every stored position becomes a GTID
  state (its ``"gtids"``; a file/offset-only position from an older flowlake is converted with
  MariaDB's ``BINLOG_GTID_POS`` on the server that wrote it), the server must hold each of them (a
  replica that lags, or lost transactions in a failover, is refused), and reading starts from their
  meet.
- Otherwise by file and offset: from the oldest stored one, refused when a position names another
  server (its offsets mean nothing here); with no stored position, from the binlog's current end.
  The GTID state there is still worked out where the server can tell it, so the positions written
  from now on carry one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowlake.cdc.mysql_gtid import AnyGtids, Flavour, MariaDbGtids, parse_gtids, stored_gtids
from flowlake.errors import FlowlakeError


class PositionError(FlowlakeError):
    """A stored binlog position cannot be resumed on this server."""


def server_identity(cur: Any, *, mariadb: bool) -> tuple[Flavour | None, str]:
    """The server's GTID flavour (``None``: no GTIDs, MySQL's ``gtid_mode`` not ``ON``) and its id."""
    if mariadb:
        cur.execute("SELECT @@server_id")
        return "mariadb", str(cur.fetchone()[0])
    cur.execute("SELECT @@server_uuid, @@gtid_mode")
    uuid, mode = cur.fetchone()
    return ("mysql" if str(mode).upper() == "ON" else None), str(uuid)


def gtid_strict(cur: Any) -> bool:
    """Whether MariaDB enforces that seqs only grow within a domain (``gtid_strict_mode``).

    Resuming by GTID relies on it (a transaction is held if its domain's stored seq is at least its
    own); a single primary per domain keeps it without the setting, which makes the server refuse
    what would break it.
    """
    cur.execute("SELECT @@gtid_strict_mode")
    return str(cur.fetchone()[0]) in ("1", "ON")


def resume_point(
    cur: Any,
    *,
    flavour: Flavour | None,
    server: str,
    by_gtid: bool,
    stored: Mapping[str, Mapping[str, Any]],
    known: Sequence[Mapping[str, Any]],
) -> tuple[tuple[str, int] | None, AnyGtids | None]:
    """``(file, offset)`` to read from (``None``: read by GTID) and the GTID state there, if known.

    Args:
        cur: A cursor on the server.
        flavour: From :func:`server_identity`.
        server: The server's id, from :func:`server_identity`.
        by_gtid: Whether GTIDs may be used (``False`` for ``?gtid=off``).
        stored: Each source table's stored position (for messages).
        known: Every stored position reading must not start after (``stored`` and the dead letters').

    Raises:
        PositionError: If a position cannot be resumed here (named with its table and what to do).
    """
    names = {id(p): t for t, p in stored.items()}
    if flavour is not None and by_gtid and known:
        states = [_state_of(cur, flavour, server, p, names.get(id(p), "dead letters")) for p in known]
        if all(s is not None for s in states):
            return None, _gtid_start(cur, flavour, [s for s in states if s is not None], known, names)
    for p in known:
        table = names.get(id(p), "dead letters")
        if not p.get("file"):
            raise PositionError(
                f"the position of {table} has no binlog file/offset ({dict(p)}); resume it by GTID "
                "(drop ?gtid=off) on a server with GTIDs"
            )
        if p.get("server") not in (None, server):
            raise PositionError(
                f"the position of {table} ({p['file']}:{p['pos']}) was read from server {p['server']}, "
                f"this is server {server}: binlog offsets differ between servers. Resume by GTID (drop "
                "?gtid=off; MySQL needs gtid_mode=ON) or point the source at that server"
            )
    if known:
        start = min((str(p["file"]), int(p.get("pos", 0))) for p in known)
        gtids = _binlog_gtid_pos(cur, start) if flavour == "mariadb" else None
        return start, gtids
    start, executed = master_status(cur)
    if flavour == "mysql":
        return start, parse_gtids("mysql", executed)
    return start, _binlog_gtid_pos(cur, start) if flavour == "mariadb" else None


def master_status(cur: Any) -> tuple[tuple[str, int], str]:
    """The binlog's end ``(file, offset)`` and, on MySQL, the executed GTID set there (atomically).

    Raises:
        PositionError: If the binlog is off.
    """
    cur.execute("SHOW MASTER STATUS")
    row = cur.fetchone()
    if row is None:
        raise PositionError("SHOW MASTER STATUS is empty; is the binlog on?")
    executed = str(row[4]) if len(row) > 4 and row[4] is not None else ""
    return (str(row[0]), int(row[1])), executed


def _state_of(
    cur: Any, flavour: Flavour, server: str, position: Mapping[str, Any], table: str
) -> AnyGtids | None:
    """A stored position's GTID state: its own, or (MariaDB, same server) converted from file/offset."""
    state = stored_gtids(position, flavour)
    if state is not None:
        return state if _flavour_of(state) == flavour else None
    if flavour != "mariadb" or not position.get("file") or position.get("server") not in (None, server):
        return None
    state = _binlog_gtid_pos(cur, (str(position["file"]), int(position.get("pos", 0))))
    if state is None:
        raise PositionError(
            f"the position of {table} ({position['file']}:{position.get('pos')}) is not in this server's "
            "binlog (purged, or written by another server); re-snapshot the table or point the source "
            "at the server that wrote it"
        )
    return state


def _gtid_start(
    cur: Any,
    flavour: Flavour,
    states: list[AnyGtids],
    known: Sequence[Mapping[str, Any]],
    names: Mapping[int, str],
) -> AnyGtids:
    """The meet of the stored states, after checking the server holds each."""
    cur.execute("SELECT @@gtid_binlog_pos" if flavour == "mariadb" else "SELECT @@gtid_executed")
    have = parse_gtids(flavour, str(cur.fetchone()[0] or ""))
    for state, p in zip(states, known, strict=True):
        if not have.covers(state):  # type: ignore[arg-type]
            raise PositionError(
                f"this server lacks transactions that {names.get(id(p), 'dead letters')} already holds "
                f"(GTIDs {have.missing(state)}; the server is at {have}): it is behind, so wait until "  # type: ignore[arg-type]
                "it has caught up, or it lost them in a failover, so ODS is ahead of it and the table "
                "must be snapshotted again"
            )
    start = states[0]
    for state in states[1:]:
        start = start.meet(state)  # type: ignore[arg-type]
    return start


def _binlog_gtid_pos(cur: Any, at: tuple[str, int]) -> AnyGtids | None:
    """MariaDB's GTID state at a binlog file/offset, or ``None`` if the server cannot tell."""
    cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", at)
    row = cur.fetchone()
    return None if row is None or row[0] is None else parse_gtids("mariadb", str(row[0]))


def _flavour_of(state: AnyGtids) -> Flavour:
    return "mariadb" if isinstance(state, MariaDbGtids) else "mysql"
