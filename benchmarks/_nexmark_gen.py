"""The Nexmark event generator, vectorized: persons, auctions and bids as Arrow tables.

Follows the Flink nexmark project's generator (``nexmark-flink/.../generator``) with its default
configuration: event ``n`` (counted from 0) has number ``n + 1`` and id ``n + 2``; ``id % 50`` picks
the kind in the 1:3:46 proportion (person, auction, bid); the event time is ``base + (long)(number *
1e6 / tps) / 1000`` ms; person and auction ids, sellers, bidders (hot ones, and recent ones with a lead
of 10), bid auctions (hot ones, and in-flight ones), prices ``round(10^(6u) * 100)``, categories,
auction expiry, names, e-mails, credit cards, cities, states, channels and URLs (4 hot channels, a
cache of 10,000 others, 9 in 10 of them with a ``channel_id``) and ``extra`` padding to the average
sizes (200/500/100 bytes) are drawn as that code draws them. Like it, a bid's bidder gets
``FIRST_PERSON_ID`` added twice. Random numbers come from numpy, not Java's ``SplittableRandom``, so
the values are the same distributions, not the same sequence.

Bids have no key in Nexmark; the lake table adds ``event_id`` (the generator's event id), because a
view's table needs a primary key and a bid stream has none otherwise.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa

PERSON_PROPORTION, AUCTION_PROPORTION, BID_PROPORTION = 1, 3, 46
TOTAL = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION
FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
NUM_CATEGORIES = 5
NUM_ACTIVE_PEOPLE = 1000
NUM_IN_FLIGHT_AUCTIONS = 100
PERSON_ID_LEAD = 10
AUCTION_ID_LEAD = 10
HOT_SELLERS_RATIO = 4
HOT_AUCTION_RATIO = 2
HOT_BIDDERS_RATIO = 4
HOT_RATIO = 100  # sellers, auctions and bidders: "hot" ids are multiples of 100
AVG_PERSON, AVG_AUCTION, AVG_BID = 200, 500, 100
CHANNELS = 10_000
HOT_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]
US_STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"]
US_CITIES = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
]
FIRST_NAMES = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"]
LAST_NAMES = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"]
BASE_TIME = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
"""The first event's time (Flink takes the wall clock; a fixed one makes runs repeatable)."""

TS = pa.timestamp("ms")
PERSON = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("name", pa.string()),
        ("emailaddress", pa.string()),
        ("creditcard", pa.string()),
        ("city", pa.string()),
        ("state", pa.string()),
        ("datetime", TS),
        ("extra", pa.string()),
    ]
)
AUCTION = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("itemname", pa.string()),
        ("description", pa.string()),
        ("initialbid", pa.int64()),
        ("reserve", pa.int64()),
        ("datetime", TS),
        ("expires", TS),
        ("seller", pa.int64()),
        ("category", pa.int64()),
        ("extra", pa.string()),
    ]
)
BID = pa.schema(
    [
        pa.field("event_id", pa.int64(), nullable=False),
        ("auction", pa.int64()),
        ("bidder", pa.int64()),
        ("price", pa.int64()),
        ("channel", pa.string()),
        ("url", pa.string()),
        ("datetime", TS),
        ("extra", pa.string()),
    ]
)


def _strings(rng: np.random.Generator, n: int, max_length: int, special: str = " ") -> list[str]:
    """``StringsGenerator.nextString``: 3..max-1 letters, 1 in 13 of them ``special``, trimmed."""
    lengths = 3 + rng.integers(0, max_length - 3, n)
    total = int(lengths.sum())
    letters = rng.integers(0, 26, total) + ord("a")
    letters[rng.integers(0, 13, total) == 0] = ord(special)
    text = letters.astype(np.uint8).tobytes().decode("ascii")
    ends = np.cumsum(lengths)
    return [text[e - k : e].strip() for e, k in zip(ends.tolist(), lengths.tolist(), strict=True)]


class NexmarkGenerator:
    """Nexmark events ``[start, start + count)`` as Arrow tables, for any split of the sequence."""

    def __init__(self, *, tps: int = 10_000_000, seed: int = 1) -> None:
        self.tps = tps
        self.delay_us = 1_000_000.0 / tps
        self.base_ms = int(BASE_TIME.timestamp() * 1000)
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        letters = rng.integers(0, 26, 1 << 20) + ord("a")
        self.reusable = letters.astype(np.uint8).tobytes().decode("ascii")
        urls = [self._base_url(rng) for _ in range(4 + CHANNELS)]
        self.hot_urls = urls[:4]
        with_id = rng.integers(0, 10, CHANNELS) > 0
        self.channel_urls = [
            u + f"&channel_id={_java_abs(_reverse_bits(i))}" if with_id[i] else u
            for i, u in enumerate(urls[4:])
        ]

    @staticmethod
    def _base_url(rng: np.random.Generator) -> str:
        parts = _strings(rng, 3, 5, "_")
        return "https://www.nexmark.com/" + "/".join(parts) + "/item.htm?query=1"

    def timestamp_ms(self, number: np.ndarray) -> np.ndarray:
        """``GeneratorConfig.timestampForEvent``: ``base + (long)(number * delay_us) / 1000``."""
        return self.base_ms + (number.astype(np.float64) * self.delay_us).astype(np.int64) // 1000

    def _extra(self, rng: np.random.Generator, current: np.ndarray, average: int) -> list[str]:
        """``StringsGenerator.nextExtra``: padding to ``average`` bytes, ±20%, from a reused string."""
        desired = average - current
        delta = np.floor(desired * 0.2 + 0.5).astype(np.int64)
        size = desired - delta + np.where(delta > 0, rng.integers(0, np.maximum(2 * delta, 1)), 0)
        size = np.where(current > average, 0, size)
        offsets = rng.integers(0, len(self.reusable) - size)
        r = self.reusable
        return [r[o : o + s] for o, s in zip(offsets.tolist(), size.tolist(), strict=True)]

    def events(self, start: int, count: int) -> dict[str, pa.Table]:
        """Events ``start .. start + count - 1``: ``{"person": ..., "auction": ..., "bid": ...}``."""
        rng = np.random.default_rng([self.seed, 1, start])
        number = np.arange(start + 1, start + count + 1, dtype=np.int64)
        event_id = number + 1
        ts = self.timestamp_ms(number)
        rem = event_id % TOTAL
        kinds = {
            "person": rem < PERSON_PROPORTION,
            "auction": (rem >= PERSON_PROPORTION) & (rem < PERSON_PROPORTION + AUCTION_PROPORTION),
            "bid": rem >= PERSON_PROPORTION + AUCTION_PROPORTION,
        }
        return {
            "person": self._persons(rng, event_id[kinds["person"]], ts[kinds["person"]]),
            "auction": self._auctions(
                rng, event_id[kinds["auction"]], number[kinds["auction"]], ts[kinds["auction"]]
            ),
            "bid": self._bids(rng, event_id[kinds["bid"]], ts[kinds["bid"]]),
        }

    def _persons(self, rng: np.random.Generator, eid: np.ndarray, ts: np.ndarray) -> pa.Table:
        n = len(eid)
        names = [
            f"{FIRST_NAMES[a]} {LAST_NAMES[b]}"
            for a, b in zip(rng.integers(0, 11, n).tolist(), rng.integers(0, 9, n).tolist(), strict=True)
        ]
        emails = [f"{a}@{b}.com" for a, b in zip(_strings(rng, n, 7), _strings(rng, n, 5), strict=True)]
        digits = rng.integers(0, 10_000, (n, 4)).tolist()
        cards = [f"{a:04d} {b:04d} {c:04d} {d:04d}" for a, b, c, d in digits]
        cities = [US_CITIES[i] for i in rng.integers(0, len(US_CITIES), n).tolist()]
        states = [US_STATES[i] for i in rng.integers(0, len(US_STATES), n).tolist()]
        current = np.array(
            [
                8 + len(a) + len(b) + len(c) + len(d) + len(e)
                for a, b, c, d, e in zip(names, emails, cards, cities, states, strict=True)
            ],
            dtype=np.int64,
        )
        columns = [
            last_base0_person_id(eid) + FIRST_PERSON_ID,
            names,
            emails,
            cards,
            cities,
            states,
            ts,
            self._extra(rng, current, AVG_PERSON),
        ]
        return pa.Table.from_arrays(
            [pa.array(c, f.type) for c, f in zip(columns, PERSON, strict=True)], schema=PERSON
        )

    def _auctions(
        self, rng: np.random.Generator, eid: np.ndarray, number: np.ndarray, ts: np.ndarray
    ) -> pa.Table:
        n = len(eid)
        hot = rng.integers(0, HOT_SELLERS_RATIO, n) > 0
        seller = np.where(
            hot,
            last_base0_person_id(eid) // HOT_RATIO * HOT_RATIO,
            next_base0_person_id(rng, eid),
        )
        category = FIRST_CATEGORY_ID + rng.integers(0, NUM_CATEGORIES, n)
        initial = next_price(rng, n)
        # AuctionGenerator.nextAuctionLengthMs: up to twice the time until 100 auctions later
        ahead = NUM_IN_FLIGHT_AUCTIONS * TOTAL // AUCTION_PROPORTION
        horizon = self.timestamp_ms(number + ahead) - ts
        expires = ts + 1 + rng.integers(0, np.maximum(horizon * 2, 1))
        names = _strings(rng, n, 20)
        descriptions = _strings(rng, n, 100)
        reserve = initial + next_price(rng, n)
        current = np.array([8 + len(a) + len(b) + 40 for a, b in zip(names, descriptions, strict=True)])
        columns = [
            last_base0_auction_id(eid) + FIRST_AUCTION_ID,
            names,
            descriptions,
            initial,
            reserve,
            ts,
            expires,
            seller + FIRST_PERSON_ID,
            category,
            self._extra(rng, current, AVG_AUCTION),
        ]
        return pa.Table.from_arrays(
            [pa.array(c, f.type) for c, f in zip(columns, AUCTION, strict=True)], schema=AUCTION
        )

    def _bids(self, rng: np.random.Generator, eid: np.ndarray, ts: np.ndarray) -> pa.Table:
        n = len(eid)
        last_auction = last_base0_auction_id(eid)
        low = np.maximum(last_auction - NUM_IN_FLIGHT_AUCTIONS, 0)
        auction = np.where(
            rng.integers(0, HOT_AUCTION_RATIO, n) > 0,
            last_auction // HOT_RATIO * HOT_RATIO,
            low + rng.integers(0, last_auction - low + 1 + AUCTION_ID_LEAD),
        )
        bidder = np.where(
            rng.integers(0, HOT_BIDDERS_RATIO, n) > 0,
            last_base0_person_id(eid) // HOT_RATIO * HOT_RATIO + 1,
            next_base0_person_id(rng, eid),
        )
        price = next_price(rng, n)
        hot = rng.integers(0, 2, n) > 0
        hot_index = rng.integers(0, len(HOT_CHANNELS), n)
        channel_index = rng.integers(0, CHANNELS, n)
        channels = [
            HOT_CHANNELS[h] if is_hot else f"channel-{c}"
            for is_hot, h, c in zip(hot.tolist(), hot_index.tolist(), channel_index.tolist(), strict=True)
        ]
        urls = [
            self.hot_urls[h] if is_hot else self.channel_urls[c]
            for is_hot, h, c in zip(hot.tolist(), hot_index.tolist(), channel_index.tolist(), strict=True)
        ]
        columns = [
            eid,
            auction + FIRST_AUCTION_ID,
            bidder + 2 * FIRST_PERSON_ID,  # BidGenerator adds FIRST_PERSON_ID twice
            price,
            channels,
            urls,
            ts,
            self._extra(rng, np.full(n, 32), AVG_BID),
        ]
        return pa.Table.from_arrays(
            [pa.array(c, f.type) for c, f in zip(columns, BID, strict=True)], schema=BID
        )


def last_base0_person_id(eid: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``PersonGenerator.lastBase0PersonId``: the newest person at or before event ``eid``."""
    epoch, offset = eid // TOTAL, eid % TOTAL
    return epoch * PERSON_PROPORTION + np.minimum(offset, PERSON_PROPORTION - 1)


def last_base0_auction_id(eid: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``AuctionGenerator.lastBase0AuctionId``: the newest auction at or before event ``eid``."""
    epoch, offset = eid // TOTAL, eid % TOTAL
    before = offset < PERSON_PROPORTION
    epoch = np.where(before, epoch - 1, epoch)
    offset = np.where(
        before | (offset >= PERSON_PROPORTION + AUCTION_PROPORTION),
        AUCTION_PROPORTION - 1,
        offset - PERSON_PROPORTION,
    )
    return epoch * AUCTION_PROPORTION + offset


def next_base0_person_id(rng: np.random.Generator, eid: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``PersonGenerator.nextBase0PersonId``: one of the last 1000 people (or up to 10 ahead)."""
    people = last_base0_person_id(eid) + 1
    active = np.minimum(people, NUM_ACTIVE_PEOPLE)
    return people - active + rng.integers(0, active + PERSON_ID_LEAD)


def next_price(rng: np.random.Generator, n: int) -> np.ndarray:
    """``PriceGenerator.nextPrice``: ``round(10^(6u) * 100)`` cents."""
    return np.floor(np.power(10.0, rng.random(n) * 6.0) * 100.0 + 0.5).astype(np.int64)


def _reverse_bits(i: int) -> int:
    """Java's ``Integer.reverse`` as a signed 32-bit int."""
    r = int(f"{i:032b}"[::-1], 2)
    return r - (1 << 32) if r >= 1 << 31 else r


def _java_abs(i: int) -> int:
    return i if i == -(1 << 31) else abs(i)
