"""Binlog positions that survive a failover: GTID states, and the resume order built on them.

A binlog file and offset name a place in one server's binlog; a replica writes the same transactions
into files of its own, at other offsets. A GTID names a transaction wherever it is replicated, so a
position stored as a *GTID state* (every transaction up to it, across all replication domains or
source servers) can be resumed on any server of the topology.

- MariaDB: ``domain-server-seq`` GTIDs; a state holds the last seq of each domain
  (``@@gtid_binlog_pos`` format, ``0-1-17,1-2-5``). A transaction ``d-s-n`` is in a state whose
  domain ``d`` has a seq of at least ``n`` (seqs only grow within a domain).
- MySQL: ``uuid:n`` GTIDs; a state is a GTID *set* (``@@gtid_executed`` format,
  ``3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7``), and a transaction is in it if its number is.

:class:`ResumeOrder` compares a change group with a stored position by GTIDs where both have them
("does this table's state hold that transaction?"), and by ``(file, pos, sub)`` otherwise (a
position stored before GTID states were recorded, read back from the same server).
:class:`GtidTracker` keeps a stream's state as it reads.

>>> state = MariaDbGtids.parse("0-1-17,1-2-5")
>>> state.holds("0-1-12"), state.holds("1-2-6"), state.holds("2-1-1")
(True, False, False)
>>> str(state.with_gtid("1-3-6"))
'0-1-17,1-3-6'
>>> str(state.meet(MariaDbGtids.parse("0-1-20,1-2-4")))
'0-1-17,1-2-4'
>>> mysql = MySqlGtids.parse("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7")
>>> mysql.holds("3e11fa47-71ca-11e1-9e33-c80aa9429562:6"), str(mysql.with_gtid(mysql_gtid(6)))
(False, '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from flowlake.errors import InvalidArgumentError

Flavour = Literal["mariadb", "mysql"]
"""Which GTID format a server uses."""

_MARIADB_GTID: Final = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ANONYMOUS: Final = "00000000-0000-0000-0000-000000000000"


def mysql_gtid(number: int, uuid: str = "3e11fa47-71ca-11e1-9e33-c80aa9429562") -> str:
    """``uuid:number`` (for examples and tests)."""
    return f"{uuid}:{number}"


@dataclass(frozen=True, slots=True)
class MariaDbGtids:
    """A MariaDB GTID position: per replication domain, the last transaction's ``(server, seq)``."""

    domains: tuple[tuple[int, int, int], ...] = ()
    """``(domain, server, seq)`` sorted by domain, one per domain."""

    @classmethod
    def parse(cls, text: str) -> MariaDbGtids:
        """From ``@@gtid_binlog_pos`` text: comma-separated ``domain-server-seq`` (may be empty).

        Raises:
            InvalidArgumentError: For anything else.
        """
        found: dict[int, tuple[int, int]] = {}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            match = _MARIADB_GTID.match(part)
            if match is None:
                raise InvalidArgumentError(f"not a MariaDB GTID position: {text!r} (expected 0-1-17,1-2-5)")
            domain, server, seq = (int(g) for g in match.groups())
            if domain in found:
                raise InvalidArgumentError(f"MariaDB GTID position {text!r} names domain {domain} twice")
            found[domain] = (server, seq)
        return cls(tuple((d, s, n) for d, (s, n) in sorted(found.items())))

    def _seqs(self) -> dict[int, int]:
        return {d: n for d, _, n in self.domains}

    def holds(self, gtid: str) -> bool:
        """Whether ``domain-server-seq`` is in the state (its domain's seq is at least ``seq``)."""
        match = _MARIADB_GTID.match(gtid.strip())
        if match is None:
            return False
        domain, _, seq = (int(g) for g in match.groups())
        return self._seqs().get(domain, -1) >= seq

    def with_gtid(self, gtid: str) -> MariaDbGtids:
        """The state after ``gtid``: its domain's entry replaced."""
        match = _MARIADB_GTID.match(gtid.strip())
        if match is None:
            return self
        domain, server, seq = (int(g) for g in match.groups())
        rest = [e for e in self.domains if e[0] != domain]
        return MariaDbGtids(tuple(sorted([*rest, (domain, server, seq)])))

    def covers(self, other: MariaDbGtids) -> bool:
        """Whether each domain of ``other`` is here with at least its seq."""
        mine = self._seqs()
        return all(mine.get(d, -1) >= n for d, _, n in other.domains)

    def meet(self, other: MariaDbGtids) -> MariaDbGtids:
        """Per domain the smaller of the two (a domain one state lacks is read from its beginning)."""
        theirs = {d: (s, n) for d, s, n in other.domains}
        out = []
        for d, s, n in self.domains:
            if d in theirs:
                out.append((d, s, n) if n <= theirs[d][1] else (d, *theirs[d]))
        return MariaDbGtids(tuple(out))

    def missing(self, other: MariaDbGtids) -> str:
        """The domains of ``other`` this state is behind in, as ``other``'s GTIDs."""
        mine = self._seqs()
        return ",".join(f"{d}-{s}-{n}" for d, s, n in other.domains if mine.get(d, -1) < n)

    def __str__(self) -> str:
        return ",".join(f"{d}-{s}-{n}" for d, s, n in self.domains)


@dataclass(frozen=True, slots=True)
class MySqlGtids:
    """A MySQL GTID set: per source server uuid, the transaction numbers as closed intervals."""

    sets: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()
    """``(uuid, ((first, last), ...))`` sorted by uuid, intervals sorted and disjoint."""

    @classmethod
    def parse(cls, text: str) -> MySqlGtids:
        """From ``@@gtid_executed`` text: ``uuid:1-5:7,uuid2:1-9`` (whitespace ignored; may be empty).

        Raises:
            InvalidArgumentError: For anything else.
        """
        found: dict[str, list[tuple[int, int]]] = {}
        for part in re.sub(r"\s+", "", str(text)).split(","):
            if not part:
                continue
            uuid, *ranges = part.lower().split(":")
            if not _UUID.match(uuid) or not ranges:
                raise InvalidArgumentError(f"not a MySQL GTID set: {text!r} (expected uuid:1-5:7,...)")
            for r in ranges:
                first, _, last = r.partition("-")
                if not first.isdigit() or (last and not last.isdigit()):
                    raise InvalidArgumentError(f"not a MySQL GTID set: {text!r} (bad interval {r!r})")
                found.setdefault(uuid, []).append((int(first), int(last or first)))
        return cls(tuple((u, _merge(found[u])) for u in sorted(found)))

    def _intervals(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return dict(self.sets)

    def holds(self, gtid: str) -> bool:
        """Whether ``uuid:n`` is in the set."""
        parsed = _mysql_single(gtid)
        if parsed is None:
            return False
        uuid, n = parsed
        return any(a <= n <= b for a, b in self._intervals().get(uuid, ()))

    def with_gtid(self, gtid: str) -> MySqlGtids:
        """The set with ``uuid:n`` added."""
        parsed = _mysql_single(gtid)
        if parsed is None:
            return self
        uuid, n = parsed
        sets = self._intervals()
        sets[uuid] = _merge([*sets.get(uuid, ()), (n, n)])
        return MySqlGtids(tuple(sorted(sets.items())))

    def covers(self, other: MySqlGtids) -> bool:
        """Whether ``other`` is a subset of this set."""
        mine = self._intervals()
        return all(
            any(a <= first and last <= b for a, b in mine.get(uuid, ()))
            for uuid, intervals in other.sets
            for first, last in intervals
        )

    def meet(self, other: MySqlGtids) -> MySqlGtids:
        """The intersection of the two sets."""
        theirs = other._intervals()
        out = []
        for uuid, intervals in self.sets:
            both = [
                (max(a, c), min(b, d))
                for a, b in intervals
                for c, d in theirs.get(uuid, ())
                if max(a, c) <= min(b, d)
            ]
            if both:
                out.append((uuid, _merge(both)))
        return MySqlGtids(tuple(out))

    def missing(self, other: MySqlGtids) -> str:
        """A short description of the part of ``other`` this set lacks."""
        lacking = [
            str(MySqlGtids(((u, iv),))) for u, iv in other.sets if not self.covers(MySqlGtids(((u, iv),)))
        ]
        return ",".join(lacking)

    def __str__(self) -> str:
        return ",".join(
            uuid + "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in intervals)
            for uuid, intervals in self.sets
        )


AnyGtids = MariaDbGtids | MySqlGtids
"""A GTID state of either flavour."""


def parse_gtids(flavour: Flavour, text: str) -> AnyGtids:
    """A state of the server's flavour from its text form."""
    return MariaDbGtids.parse(text) if flavour == "mariadb" else MySqlGtids.parse(text)


Point = tuple[int, int] | tuple[str, int]
"""One transaction: MariaDB ``(domain, seq)``, MySQL ``(uuid, number)``."""


def point_of(gtid: str) -> Point | None:
    """The transaction a GTID names, or ``None`` if it is none (MySQL's anonymous GTIDs are not).

    >>> point_of("0-1-9"), point_of("3e11fa47-71ca-11e1-9e33-c80aa9429562:5"), point_of("junk")
    ((0, 9), ('3e11fa47-71ca-11e1-9e33-c80aa9429562', 5), None)
    """
    parts = gtid.split("-")
    if len(parts) == 3:  # MariaDB (a uuid has 5 parts)
        return (int(parts[0]), int(parts[2])) if parts[0].isdigit() and parts[2].isdigit() else None
    return _mysql_single(gtid)


class GtidTracker:
    """The GTID state of a binlog stream, advanced once per transaction.

    The reader's per-transaction step, so kept cheap: MariaDB's state is kept as each domain's last
    GTID text, and its text form is rebuilt only from those.

    >>> tracker = GtidTracker(MariaDbGtids.parse("0-1-10"))
    >>> tracker.advance("1-1-4"), tracker.text, tracker.advance("0-2-11"), tracker.text
    ((1, 4), '0-1-10,1-1-4', (0, 11), '0-2-11,1-1-4')
    """

    __slots__ = ("_entries", "_state", "text")

    def __init__(self, state: AnyGtids) -> None:
        self._state: AnyGtids | None = state
        self._entries = (
            {d: f"{d}-{s}-{n}" for d, s, n in state.domains} if isinstance(state, MariaDbGtids) else None
        )
        self.text = str(state)

    @property
    def state(self) -> AnyGtids:
        """The state now."""
        if self._state is None:
            self._state = MariaDbGtids.parse(self.text)
        return self._state

    def peek(self, gtid: str) -> tuple[int, int] | None:
        """The point :meth:`advance` would return for a MariaDB ``gtid``, without taking it in
        (``None``: a MySQL state, or not a MariaDB GTID).

        >>> GtidTracker(MariaDbGtids.parse("0-1-10")).peek("2-1-7"), GtidTracker(MySqlGtids()).peek("x")
        ((2, 7), None)
        """
        if self._entries is None:
            return None
        parts = gtid.split("-")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
            return None
        return int(parts[0]), int(parts[2])

    def advance(self, gtid: str) -> Point | None:
        """Take in the next transaction; its point, or ``None`` (state unchanged) if ``gtid`` is none."""
        entries = self._entries
        if entries is not None:
            parts = gtid.split("-")
            if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
                return None
            domain, seq = int(parts[0]), int(parts[2])
            entries[domain] = gtid
            self.text = gtid if len(entries) == 1 else ",".join([entries[d] for d in sorted(entries)])
            self._state = None
            return domain, seq
        mysql = point_of(gtid)
        state = self.state
        if mysql is None or not isinstance(state, MySqlGtids) or isinstance(mysql[0], int):
            return None
        self._state = state.with_gtid(gtid)
        self.text = str(self._state)
        return mysql


def _mysql_single(gtid: str) -> tuple[str, int] | None:
    uuid, _, number = gtid.strip().lower().rpartition(":")
    if not _UUID.match(uuid) or uuid == _ANONYMOUS or not number.isdigit() or int(number) == 0:
        return None
    return uuid, int(number)


def _merge(intervals: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


class ResumeOrder:
    """A binlog position as the ingester compares it: by GTIDs where both sides have them.

    ``a <= b`` reads "b already holds a". A change group's order carries its own transaction
    (``point``), a stored position's its whole GTID state (``gtids``): the group is held if the state
    holds its transaction, exactly per domain (or per source uuid), even when a replica interleaved
    domains differently from the server that wrote the state. Two states: every transaction of one
    is in the other (and, for equal states, ``sub`` decides: a snapshot chunk sorts after the stream
    group at its place). Without GTIDs on either side, ``(file, pos, sub)`` order, meaningful only
    within one server's binlog. ``a > b`` is ``not a <= b`` ("b does not hold a"), which is what the
    ingester asks of it.

    >>> group = ResumeOrder.of_transaction("0-1-5", "mysql-bin.000001", 900)
    >>> stored = ResumeOrder(MariaDbGtids.parse("0-1-7"), "replica-bin.000004", 12)
    >>> group <= stored, group > stored, str(group)
    (True, False, '0-1-5:0')
    >>> ResumeOrder(None, "mysql-bin.000001", 900) < ResumeOrder(None, "mysql-bin.000002", 4)
    True
    """

    __slots__ = ("_flavour", "_lookup", "file", "gtids", "label", "point", "pos", "sub")

    def __init__(
        self,
        gtids: AnyGtids | None,
        file: str,
        pos: int,
        sub: int = 0,
        *,
        point: Point | None = None,
        label: str = "",
    ) -> None:
        self.gtids, self.file, self.pos, self.sub = gtids, file, pos, sub
        self.point, self.label = point, label
        self._lookup: dict[Any, Any] | None = None
        self._flavour: Flavour | None = None
        if gtids is not None:
            self._flavour = "mariadb" if isinstance(gtids, MariaDbGtids) else "mysql"
        elif point is not None:
            self._flavour = "mariadb" if isinstance(point[0], int) else "mysql"

    @classmethod
    def of_transaction(cls, gtid: str, file: str, pos: int) -> ResumeOrder:
        """The order of a stream group: its transaction's GTID (file/offset if it is none)."""
        return cls(None, file, pos, point=point_of(gtid), label=gtid)

    def _holds(self, point: Point) -> bool:
        """Whether this order's state holds the transaction ``point`` (a dict lookup, cached)."""
        lookup = self._lookup
        if lookup is None:
            gtids = self.gtids
            if isinstance(gtids, MariaDbGtids):
                lookup = {d: n for d, _, n in gtids.domains}
            else:
                lookup = dict(gtids.sets) if gtids is not None else {}
            self._lookup = lookup
        found = lookup.get(point[0])
        if found is None:
            return False
        if isinstance(found, int):
            return found >= point[1]
        return any(a <= point[1] <= b for a, b in found)

    def _state(self) -> AnyGtids | None:
        if self.gtids is not None or self.point is None:
            return self.gtids
        empty: AnyGtids = MariaDbGtids() if isinstance(self.point[0], int) else MySqlGtids()
        return empty.with_gtid(self.label)

    def _key(self) -> tuple[str, int, int]:
        return (self.file, self.pos, self.sub)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResumeOrder):
            return NotImplemented
        flavour = self._flavour
        if flavour is None or flavour != other._flavour:
            return self._key() == other._key()
        if self.point is not None and other.point is not None:
            return self.point == other.point and self.sub == other.sub
        return self.gtids == other.gtids and self.point == other.point and self.sub == other.sub

    def __hash__(self) -> int:
        return hash(self.sub)

    def __le__(self, other: ResumeOrder) -> bool:
        flavour = self._flavour
        if flavour is None or flavour != other._flavour:
            return self._key() <= other._key()
        if self.point is not None and other.gtids is not None:
            return other._holds(self.point)  # the hot path: a re-read transaction, a stored state
        mine, theirs = self._state(), other._state()
        if mine == theirs:
            return self.sub <= other.sub
        return theirs.covers(mine)  # type: ignore[union-attr,arg-type]

    def __lt__(self, other: ResumeOrder) -> bool:
        return self <= other and self != other

    def __ge__(self, other: ResumeOrder) -> bool:
        return other <= self

    def __gt__(self, other: ResumeOrder) -> bool:
        return not self <= other

    def __str__(self) -> str:
        if self.point is not None:
            return f"{self.label}:{self.sub}"
        if self.gtids is not None:
            return f"{self.gtids}:{self.sub}"
        return f"{self.file}:{self.pos}:{self.sub}"

    def __repr__(self) -> str:
        return f"ResumeOrder({self!s}, {self.file!r}, {self.pos})"


class StoredOrders:
    """The orders of stored positions, asked per transaction whether any of them holds it.

    ``holds(order)`` is ``any(order <= stored for stored in orders)`` on the ``(ResumeOrder,)``
    tuples the ingester compares, answered for a MariaDB transaction against MariaDB states by one
    dict lookup (the highest seq any stored state holds in its domain) instead of a comparison per
    stored position.

    >>> stored = StoredOrders([(ResumeOrder(MariaDbGtids.parse("0-1-7,1-1-3"), "b.000001", 9),)])
    >>> gtids = ("0-1-7", "0-1-8", "1-2-3", "2-1-1")
    >>> [stored.holds((ResumeOrder.of_transaction(g, "b.000002", 4),)) for g in gtids]
    [True, False, True, False]
    """

    def __init__(self, orders: list[tuple[Any, ...]]) -> None:
        unique: dict[str, tuple[Any, ...]] = {}
        for order in orders:
            unique.setdefault(repr(order) + repr([(o.gtids, o.point, o.sub) for o in order]), order)
        self.orders = list(unique.values())
        self._seqs: dict[int, int] | None = {}
        for order in self.orders:
            first = order[0] if len(order) == 1 else None
            if not isinstance(first, ResumeOrder) or not isinstance(first.gtids, MariaDbGtids):
                self._seqs = None
                break
            for domain, _, seq in first.gtids.domains:
                self._seqs[domain] = max(seq, self._seqs.get(domain, -1))

    def holds(self, order: tuple[Any, ...]) -> bool:
        """Whether a stored order holds ``order`` (then the ingester may skip it for some table)."""
        seqs = self._seqs
        if seqs is not None and len(order) == 1:
            mine = order[0]
            point = mine.point if isinstance(mine, ResumeOrder) else None
            if point is not None and mine.gtids is None and isinstance(point[0], int):
                return seqs.get(point[0], -1) >= point[1]  # (a state without the domain holds none of it)
        return any(order <= stored for stored in self.orders)

    def holds_point(self, point: tuple[int, int]) -> bool | None:
        """:meth:`holds` for the order of a MariaDB transaction at ``point`` (``None``: ask :meth:`holds`)."""
        seqs = self._seqs
        return None if seqs is None else seqs.get(point[0], -1) >= point[1]

    def __bool__(self) -> bool:
        return bool(self.orders)


def stored_gtids(position: Mapping[str, Any], flavour: Flavour | None = None) -> AnyGtids | None:
    """The full GTID state a stored position carries (``"gtids"``), if any.

    The flavour is told by the text (MySQL sets hold ``uuid:``); an empty state is of ``flavour``
    (``None``: unknown, so no state).

    >>> stored_gtids({"file": "mysql-bin.000002", "pos": 4, "gtids": "0-1-9"})
    MariaDbGtids(domains=((0, 1, 9),))
    >>> stored_gtids({"file": "mysql-bin.000002", "pos": 4}) is None
    True
    """
    text = position.get("gtids")
    if not isinstance(text, str):
        return None
    if not text.strip():
        return None if flavour is None else parse_gtids(flavour, "")
    try:
        return parse_gtids("mysql" if ":" in text else "mariadb", text)
    except InvalidArgumentError:
        return None  # not a state we wrote: resume by file/pos
