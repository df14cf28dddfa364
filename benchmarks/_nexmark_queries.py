"""The Nexmark queries as flowlake views (DuckDB dialect) and as Flink SQL, and those left out.

Texts follow ``nexmark-flink/src/main/resources/queries/qN.sql``. Translations to DuckDB: ``MOD(a, b)``
→ ``a % b``, ``HOUR(t)`` → ``hour(t)``, ``DATE_FORMAT(t, 'yyyy-MM-dd')`` → ``strftime(t, '%Y-%m-%d')``,
``SPLIT_INDEX(s, '/', i)`` (0-based) → ``split_part(s, '/', i + 1)``, ``REGEXP_EXTRACT`` (NULL when
nothing matches) → ``nullif(regexp_extract(...), '')``, the ``count_char`` UDF → ``length(s) -
length(replace(s, 'c', ''))`` (Flink gets the same built-ins, no Python UDF), ``TUMBLE(..., 10 s)``
windows → ``time_bucket(INTERVAL '10 seconds', "datetime")``, ``HOP(..., 2 s, 10 s)`` windows → a
bid's window starts as a list, unnested (``unnest(generate_series(b - 8 s, b, 2 s))`` with ``b`` its
2-second ``time_bucket``). Changes that are not translations: q5 also outputs the window start (the
view's key, with the auction); bid queries that keep bid rows select ``event_id`` (the bid table's
key, see ``_nexmark_gen``) and ``ROW_NUMBER`` orders end with ``event_id`` as a tie-breaker, so
DuckDB and flowlake rank ties alike (Flink gets the same texts). Flink's sinks are ``blackhole``
tables, as in the Nexmark project.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    """One Nexmark query: its view options, its SELECT (DuckDB), its Flink SELECT and inputs."""

    name: str
    kind: str
    tables: tuple[str, ...]
    duckdb: str
    flink: str
    options: str = ""


BID_ROWS = "bid"
STATELESS = "stateless"
STATEFUL = "stateful"

_Q14_TYPE = (
    "CASE WHEN {h} >= 8 AND {h} <= 18 THEN 'dayTime' WHEN {h} <= 6 OR {h} >= 20 THEN 'nightTime' "
    "ELSE 'otherTime' END"
)
_RANKS = """count(*) AS total_bids,
    count(*) FILTER (WHERE price < 10000) AS rank1_bids,
    count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
    count(*) FILTER (WHERE price >= 1000000) AS rank3_bids"""
_DISTINCTS = """count(DISTINCT bidder) AS total_bidders,
    count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
    count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
    count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
    count(DISTINCT auction) AS total_auctions,
    count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
    count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
    count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions"""
_DAY_DUCK = "strftime(\"datetime\", '%Y-%m-%d')"
_DAY_FLINK = "DATE_FORMAT(`datetime`, 'yyyy-MM-dd')"
_CHANNEL_ID = "(&|^)channel_id=([^&]*)"


_WINDOW = "time_bucket(INTERVAL '10 seconds', \"datetime\")"
_HOP_STARTS = (  # the starts of the 10 s windows every 2 s that hold a bid (Flink's HOP)
    "unnest(generate_series(time_bucket(INTERVAL '2 seconds', \"datetime\") - INTERVAL '8 seconds', "
    "time_bucket(INTERVAL '2 seconds', \"datetime\"), INTERVAL '2 seconds'))"
)
_HOP_FLINK = "TABLE(HOP(TABLE bid, DESCRIPTOR(`datetime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"


def _both(sql: str) -> tuple[str, str]:
    """A SELECT written once with ``{q}`` for identifier quotes: DuckDB's ``"`` and Flink's backquote."""
    flink = sql.format(q="`", win="").replace("nexmark.", "").replace("auction % 123", "MOD(auction, 123)")
    return sql.format(q='"', win=_WINDOW), flink


def _q(
    name: str, kind: str, tables: tuple[str, ...], sql: str, options: str = "", flink: str | None = None
) -> Query:
    duck, flink_sql = _both(sql)
    return Query(name, kind, tables, duck, flink or flink_sql, options)


QUERIES: list[Query] = [
    _q(
        "q0",
        STATELESS,
        ("bid",),
        "SELECT event_id, auction, bidder, price, {q}datetime{q}, extra FROM nexmark.bid",
        "primary_key = 'event_id'",
    ),
    _q(
        "q1",
        STATELESS,
        ("bid",),
        "SELECT event_id, auction, bidder, 0.908 * price AS price, {q}datetime{q}, extra FROM nexmark.bid",
        "primary_key = 'event_id'",
    ),
    _q(
        "q2",
        STATELESS,
        ("bid",),
        "SELECT event_id, auction, price FROM nexmark.bid WHERE auction % 123 = 0",
        "primary_key = 'event_id'",
    ),
    _q(
        "q3",
        STATEFUL,
        ("auction", "person"),
        "SELECT P.name, P.city, P.state, A.id FROM nexmark.auction AS A "
        "INNER JOIN nexmark.person AS P ON A.seller = P.id "
        "WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
    ),
    _q(
        "q4",
        STATEFUL,
        ("auction", "bid"),
        "SELECT Q.category, avg(Q.final) AS avg_final FROM ("
        "SELECT max(B.price) AS final, A.category FROM nexmark.auction A JOIN nexmark.bid B "
        "ON A.id = B.auction WHERE B.{q}datetime{q} BETWEEN A.{q}datetime{q} AND A.expires "
        "GROUP BY A.id, A.category) Q GROUP BY Q.category",
    ),
    Query(
        "q5",
        STATEFUL,
        ("bid",),
        f"WITH hop AS (SELECT auction, {_HOP_STARTS} AS starttime FROM nexmark.bid), "
        "auction_bids AS (SELECT auction, count(*) AS num, starttime FROM hop GROUP BY auction, starttime) "
        "SELECT A.auction, A.num, A.starttime FROM auction_bids A JOIN (SELECT starttime, max(num) AS maxn "
        "FROM auction_bids GROUP BY starttime) M ON A.starttime = M.starttime WHERE A.num >= M.maxn",
        "SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime FROM ("
        "SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime "
        f"FROM {_HOP_FLINK} GROUP BY auction, window_start, window_end) AS AuctionBids JOIN ("
        "SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM ("
        f"SELECT count(*) AS num, window_start AS starttime, window_end AS endtime FROM {_HOP_FLINK} "
        "GROUP BY auction, window_start, window_end) AS CountBids "
        "GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids "
        "ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime "
        "AND AuctionBids.num >= MaxBids.maxn",
    ),
    _q(
        "q7",
        STATEFUL,
        ("bid",),
        "SELECT B.event_id, B.auction, B.price, B.bidder, B.{q}datetime{q}, B.extra FROM nexmark.bid B "
        "JOIN (SELECT max(price) AS maxprice, {win} + INTERVAL '10' SECOND AS {q}datetime{q} "
        "FROM nexmark.bid GROUP BY {win}) B1 ON B.price = B1.maxprice "
        "WHERE B.{q}datetime{q} BETWEEN B1.{q}datetime{q} - INTERVAL '10' SECOND AND B1.{q}datetime{q}",
        "primary_key = 'event_id'",
        "SELECT B.event_id, B.auction, B.price, B.bidder, B.`datetime`, B.extra FROM bid B "
        "JOIN (SELECT MAX(price) AS maxprice, window_end AS `datetime` "
        "FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`datetime`), INTERVAL '10' SECOND)) "
        "GROUP BY window_start, window_end) B1 ON B.price = B1.maxprice "
        "WHERE B.`datetime` BETWEEN B1.`datetime` - INTERVAL '10' SECOND AND B1.`datetime`",
    ),
    _q(
        "q8",
        STATEFUL,
        ("auction", "person"),
        "SELECT P.id, P.name, P.starttime FROM ("
        "SELECT id, name, {win} AS starttime, {win} + INTERVAL '10' SECOND AS endtime "
        "FROM nexmark.person GROUP BY id, name, {win}) P JOIN ("
        "SELECT seller, {win} AS starttime, {win} + INTERVAL '10' SECOND AS endtime "
        "FROM nexmark.auction GROUP BY seller, {win}) A "
        "ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
        "",
        "SELECT P.id, P.name, P.starttime FROM ("
        "SELECT id, name, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(`datetime`), INTERVAL '10' SECOND)) "
        "GROUP BY id, name, window_start, window_end) P JOIN ("
        "SELECT seller, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`datetime`), INTERVAL '10' SECOND)) "
        "GROUP BY seller, window_start, window_end) A "
        "ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
    ),
    _q(
        "q9",
        STATEFUL,
        ("auction", "bid"),
        "SELECT id, {q}itemname{q}, description, {q}initialbid{q}, reserve, {q}datetime{q}, expires, "
        "seller, category, extra, auction, bidder, price, bid_datetime, bid_extra FROM ("
        "SELECT A.*, B.auction, B.bidder, B.price, B.{q}datetime{q} AS bid_datetime, B.extra AS bid_extra, "
        "ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.{q}datetime{q} ASC, B.event_id) "
        "AS rownum FROM nexmark.auction A JOIN nexmark.bid B "
        "ON A.id = B.auction WHERE B.{q}datetime{q} BETWEEN A.{q}datetime{q} AND A.expires"
        ") WHERE rownum <= 1",
    ),
    Query(
        "q14",
        STATELESS,
        ("bid",),
        "SELECT event_id, auction, bidder, 0.908 * price AS price, "
        + _Q14_TYPE.format(h='hour("datetime")')
        + " AS bidtimetype, \"datetime\", extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts "
        "FROM nexmark.bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        "SELECT event_id, auction, bidder, 0.908 * price AS price, "
        + _Q14_TYPE.format(h="HOUR(`datetime`)")
        + " AS bidtimetype, `datetime`, extra, CHAR_LENGTH(extra) - CHAR_LENGTH(REPLACE(extra, 'c', '')) "
        "AS c_counts FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        "primary_key = 'event_id'",
    ),
    Query(
        "q15",
        STATEFUL,
        ("bid",),
        f"SELECT {_DAY_DUCK} AS day, {_RANKS}, {_DISTINCTS} FROM nexmark.bid GROUP BY {_DAY_DUCK}",
        f"SELECT {_DAY_FLINK} AS `day`, {_RANKS}, {_DISTINCTS} FROM bid GROUP BY {_DAY_FLINK}",
    ),
    Query(
        "q16",
        STATEFUL,
        ("bid",),
        f"SELECT channel, {_DAY_DUCK} AS day, max(strftime(\"datetime\", '%H:%M')) AS minute, {_RANKS}, "
        f"{_DISTINCTS} FROM nexmark.bid GROUP BY channel, {_DAY_DUCK}",
        f"SELECT channel, {_DAY_FLINK} AS `day`, max(DATE_FORMAT(`datetime`, 'HH:mm')) AS `minute`, "
        f"{_RANKS}, {_DISTINCTS} FROM bid GROUP BY channel, {_DAY_FLINK}",
    ),
    Query(
        "q17",
        STATEFUL,
        ("bid",),
        f"SELECT auction, {_DAY_DUCK} AS day, {_RANKS}, min(price) AS min_price, max(price) AS max_price, "
        f"avg(price) AS avg_price, sum(price) AS sum_price FROM nexmark.bid GROUP BY auction, {_DAY_DUCK}",
        f"SELECT auction, {_DAY_FLINK} AS `day`, {_RANKS}, min(price) AS min_price, max(price) AS max_price, "
        f"avg(price) AS avg_price, sum(price) AS sum_price FROM bid GROUP BY auction, {_DAY_FLINK}",
    ),
    _q(
        "q18",
        STATEFUL,
        ("bid",),
        "SELECT auction, bidder, price, channel, url, {q}datetime{q}, extra FROM ("
        "SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY {q}datetime{q} DESC, "
        "event_id DESC) AS rank_number FROM nexmark.bid) WHERE rank_number <= 1",
    ),
    _q(
        "q19",
        STATEFUL,
        ("bid",),
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, event_id) "
        "AS rank_number FROM nexmark.bid) WHERE rank_number <= 10",
    ),
    _q(
        "q20",
        STATEFUL,
        ("auction", "bid"),
        "SELECT B.event_id, auction, bidder, price, channel, url, B.{q}datetime{q} AS bid_datetime, "
        "B.extra AS bid_extra, {q}itemname{q}, description, {q}initialbid{q}, reserve, "
        "A.{q}datetime{q} AS auction_datetime, expires, seller, category, A.extra AS auction_extra "
        "FROM nexmark.bid AS B INNER JOIN nexmark.auction AS A ON B.auction = A.id WHERE A.category = 10",
        "primary_key = 'event_id'",
    ),
    Query(
        "q21",
        STATELESS,
        ("bid",),
        "SELECT event_id, auction, bidder, price, channel, CASE "
        "WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1' "
        "WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3' "
        f"ELSE nullif(regexp_extract(url, '{_CHANNEL_ID}', 2), '') END AS channel_id FROM nexmark.bid "
        f"WHERE nullif(regexp_extract(url, '{_CHANNEL_ID}', 2), '') IS NOT NULL "
        "OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
        "SELECT event_id, auction, bidder, price, channel, CASE "
        "WHEN LOWER(channel) = 'apple' THEN '0' WHEN LOWER(channel) = 'google' THEN '1' "
        "WHEN LOWER(channel) = 'facebook' THEN '2' WHEN LOWER(channel) = 'baidu' THEN '3' "
        f"ELSE REGEXP_EXTRACT(url, '{_CHANNEL_ID}', 2) END AS channel_id FROM bid "
        f"WHERE REGEXP_EXTRACT(url, '{_CHANNEL_ID}', 2) IS NOT NULL "
        "OR LOWER(channel) IN ('apple', 'google', 'facebook', 'baidu')",
        "primary_key = 'event_id'",
    ),
    Query(
        "q22",
        STATELESS,
        ("bid",),
        "SELECT event_id, auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, "
        "split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM nexmark.bid",
        "SELECT event_id, auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) AS dir1, "
        "SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3 FROM bid",
        "primary_key = 'event_id'",
    ),
]


@dataclass(frozen=True)
class LeftOut:
    """A Nexmark query not run, why, and the nearest DuckDB-dialect view (compiled to show the error)."""

    name: str
    reason: str
    attempt: str | None = None
    options: str = ""


LEFT_OUT: list[LeftOut] = [
    LeftOut(
        "q6",
        "AVG(...) OVER (... ROWS BETWEEN 10 PRECEDING AND CURRENT ROW): window functions other than "
        "ROW_NUMBER",
        'SELECT seller, avg(price) OVER (PARTITION BY seller ORDER BY "datetime" '
        "ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price, event_id FROM ("
        'SELECT A.seller, B.price, B."datetime", B.event_id FROM nexmark.auction A JOIN nexmark.bid B '
        "ON A.id = B.auction)",
        "primary_key = 'event_id'",
    ),
    LeftOut("q10", "a partitioned filesystem (CSV) sink with partition commits, not a query over the lake"),
    LeftOut(
        "q11",
        "SESSION windows (gap 10 s): a window's extent depends on the data; no DuckDB scalar expresses it",
        "SELECT bidder, count(*) AS bid_count, session_start FROM session_windows(nexmark.bid, 'datetime', "
        "INTERVAL '10' SECOND) GROUP BY bidder, session_start",
    ),
    LeftOut(
        "q12",
        "processing-time windows (PROCTIME()): views are deterministic, now() is refused",
        "SELECT bidder, count(*) AS bid_count, time_bucket(INTERVAL '10 seconds', now()) AS starttime "
        "FROM nexmark.bid GROUP BY bidder, starttime",
    ),
    LeftOut(
        "q13",
        "a processing-time temporal (lookup) join against a side-input file: FOR SYSTEM_TIME AS OF "
        "PROCTIME()",
        "SELECT B.event_id, B.auction, S.value FROM (SELECT *, now() AS p_time FROM nexmark.bid) B "
        "JOIN nexmark.side_input S ON B.auction % 10000 = S.key",
        "primary_key = 'event_id'",
    ),
]


REWRITTEN: list[LeftOut] = [
    LeftOut(
        "q4",
        "run with JOIN ... ON; the comma join as Nexmark writes it compiles too (to the same plan)",
        "SELECT Q.category, avg(Q.final) AS avg_final FROM (SELECT max(B.price) AS final, A.category "
        "FROM nexmark.auction A, nexmark.bid B WHERE A.id = B.auction AND B.datetime BETWEEN A.datetime "
        "AND A.expires GROUP BY A.id, A.category) Q GROUP BY Q.category",
    ),
    LeftOut(
        "q9",
        "run with JOIN ... ON; the comma join as Nexmark writes it compiles too (to the same plan)",
        "SELECT * FROM (SELECT A.*, B.price, row_number() OVER (PARTITION BY A.id ORDER BY B.price DESC, "
        "B.datetime, B.event_id) AS rownum FROM nexmark.auction A, nexmark.bid B WHERE A.id = B.auction "
        "AND B.datetime BETWEEN A.datetime AND A.expires) WHERE rownum <= 1",
    ),
]
