"""compute_stats_many gives what compute_stats gives each part: schema, null counts and bounds (the
catalog's stats of a commit's parts are computed in one grouped pass)."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.table.stats import compute_stats, compute_stats_many, read_stats

SCHEMA = pa.schema(
    [
        ("k", pa.int64()),
        ("u", pa.uint8()),
        ("f", pa.float64()),
        ("s", pa.string()),
        ("d", pa.decimal128(12, 2)),
        ("t", pa.timestamp("us", tz="UTC")),
        ("day", pa.date32()),
        ("flag", pa.bool_()),  # not orderable: null count only
        ("_kind", pa.int8()),  # internal: left out
    ]
)
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

rows = st.fixed_dictionaries(
    {
        "k": st.integers(-(2**63), 2**63 - 1),
        "u": st.one_of(st.none(), st.integers(0, 255)),
        "f": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        "s": st.one_of(st.none(), st.text(max_size=5)),
        "d": st.one_of(st.none(), st.decimals(-(10**9), 10**9, places=2, allow_nan=False)),
        "t": st.one_of(
            st.none(), st.integers(0, 10**12).map(lambda us: EPOCH + dt.timedelta(microseconds=us))
        ),
        "day": st.one_of(
            st.none(), st.integers(0, 10**5).map(lambda n: dt.date(2000, 1, 1) + dt.timedelta(n))
        ),
        "flag": st.one_of(st.none(), st.booleans()),
        "_kind": st.integers(0, 3),
    }
)


def table(part: list[dict[str, object]]) -> pa.Table:
    columns = {f.name: [r[f.name] for r in part] for f in SCHEMA}
    columns["d"] = [
        None if v is None else decimal.Decimal(str(v)).quantize(decimal.Decimal("0.01")) for v in columns["d"]
    ]
    return pa.table(columns, schema=SCHEMA)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(rows, min_size=1, max_size=6), min_size=1, max_size=9))
def test_stats_of_many_parts_equal_each_parts_own(parts: list[list[dict[str, object]]]) -> None:
    tables = [table(p) for p in parts]
    many = compute_stats_many(tables)
    one_by_one = [compute_stats(t) for t in tables]
    assert [decoded(b) for b in many] == [decoded(b) for b in one_by_one]
    assert [read_stats(b).keys() for b in many] == [read_stats(b).keys() for b in one_by_one]


def decoded(blob: bytes) -> tuple[pa.Schema, str]:
    """The stats table as read back: values by repr, so that a NaN bound equals a NaN bound, and -0.0
    as 0.0 (the two kernels may pick either zero as a bound: equal bounds for pruning)."""
    stats = pa.ipc.open_stream(blob).read_all()
    values = {n: [v + 0.0 if isinstance(v, float) else v for v in vs] for n, vs in stats.to_pydict().items()}
    return stats.schema, repr(values)
