"""Clustering: the row order compaction writes base files in, so range filters skip row groups.

Two table properties choose it (``LakeTable.set_properties``, ``flowlake table set T key=value``):

* ``sort_by=a,b``: rows sorted by these columns (then by the primary key);
* ``cluster_by=a,b,c``: rows in Z-order of up to three columns (then by the key), so a filter on any
  of them, not only the first, finds its rows close together.

Without either, base files are sorted by the primary key. Compaction applies the order to each
bucket it rewrites and writes Parquet row-group min/max statistics for the clustering columns; a
read then skips whole files by the catalog's per-file stats and row groups by the file footers'
(:mod:`flowlake.table.scan`), and ``t.dataset()`` / ``flowlake sql`` get both through pyarrow's
dataset scanner. Base files keep their layout until a compaction rewrites their bucket.

>>> t = pa.table({"k": [1, 2, 3, 4], "x": [3, 1, 2, 1], "y": ["b", "a", "b", "a"]})
>>> spec = ClusterSpec.from_properties({"sort_by": "x"})
>>> t.take(spec.order(t, ["k"]))["k"].to_pylist()
[2, 4, 3, 1]
>>> ClusterSpec.from_properties({"cluster_by": "x,y"}).columns
('x', 'y')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import InvalidArgumentError

MAX_CLUSTER_COLUMNS = 3
"""Z-order interleaves at most this many columns (21 bits each)."""

_Z_BITS = {1: 63, 2: 31, 3: 21}


def parse_columns(text: str) -> tuple[str, ...]:
    """``"a, b"`` as ``("a", "b")``; an empty text is no columns.

    >>> parse_columns(" created_at, shop_id ")
    ('created_at', 'shop_id')
    """
    columns = tuple(c.strip() for c in str(text).split(",") if c.strip())
    if len(set(columns)) != len(columns):
        raise ValueError(text)
    return columns


def parse_cluster_columns(text: str) -> tuple[str, ...]:
    """Like :func:`parse_columns`, at most :data:`MAX_CLUSTER_COLUMNS` columns."""
    columns = parse_columns(text)
    if len(columns) > MAX_CLUSTER_COLUMNS:
        raise ValueError(text)
    return columns


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """How compaction orders a table's base files."""

    sort_by: tuple[str, ...] = ()
    cluster_by: tuple[str, ...] = ()

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> ClusterSpec:
        """The spec a table's ``sort_by`` / ``cluster_by`` properties describe."""
        return cls(
            parse_columns(properties.get("sort_by", "")),
            parse_cluster_columns(properties.get("cluster_by", "")),
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the order is about (whose row-group statistics are worth writing)."""
        return self.cluster_by or self.sort_by

    def check(self, table: str, schema: pa.Schema) -> None:
        """Raise ``InvalidArgumentError`` naming a column the table lacks or cannot order by."""
        if self.sort_by and self.cluster_by:
            raise InvalidArgumentError(
                f"table {table!r}: set sort_by or cluster_by, not both (unset one with `sort_by=`)"
            )
        for name in self.columns:
            if name not in schema.names:
                raise InvalidArgumentError(
                    f"table {table!r} has no column {name!r} to cluster by; "
                    f"columns: {', '.join(schema.names)}"
                )
            dtype = schema.field(name).type
            if pa.types.is_nested(dtype) or pa.types.is_dictionary(dtype):
                raise InvalidArgumentError(f"table {table!r}: column {name!r} ({dtype}) cannot be sorted")

    def order(self, rows: pa.Table, primary_key: Sequence[str]) -> np.ndarray:
        """The permutation of ``rows`` that compaction writes them in."""
        key = [(k, "ascending") for k in primary_key]
        if self.cluster_by:
            z = z_values(rows, self.cluster_by)
            ordered = pa.table({"__z": z, **{k: rows.column(k) for k in primary_key}})
            indices = pc.sort_indices(ordered, [("__z", "ascending"), *key])
        else:
            sort = [(c, "ascending") for c in self.sort_by if c not in primary_key] + key
            if not sort:
                return np.arange(rows.num_rows, dtype=np.int64)
            indices = pc.sort_indices(rows, sort)
        return np.asarray(indices.to_numpy(), dtype=np.int64)


def z_values(rows: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """The Z-order (Morton) value of each row over ``columns``: each column's rank scaled to the
    same number of bits, the bits interleaved, most significant first (nulls rank last)."""
    bits = _Z_BITS[len(columns)]
    scaled = []
    for name in columns:
        r = _ranks(rows.column(name))
        top = int(r.max()) if len(r) else 0
        if top >= 1 << bits:  # more distinct values than bits: scale down, keeping order
            r = (r.astype(np.float64) * (((1 << bits) - 1) / top)).astype(np.uint64)
        scaled.append(r)
    out = np.zeros(rows.num_rows, dtype=np.uint64)
    n = len(columns)
    for i, values in enumerate(scaled):
        out |= _spread(values, n) << np.uint64(n - 1 - i)
    return out


RANK_SAMPLE = 1 << 16
"""Numbers and times are ranked by their quantile among this many sampled values (see ``z_values``)."""


def _ranks(column: pa.ChunkedArray) -> np.ndarray:
    """Order-preserving uint64 ranks of a column's values (nulls last).

    Numbers and times without nulls are ranked against an evenly spaced sample of
    :data:`RANK_SAMPLE` of their sorted values (their quantile, exact up to that resolution, in one
    binary search per row); other columns by an exact dense rank (a sort).
    """
    dtype = column.type
    numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_temporal(dtype)
    if numeric and column.null_count == 0 and len(column) > RANK_SAMPLE:
        array = column.combine_chunks()
        if pa.types.is_temporal(dtype):
            array = array.view(pa.int64() if dtype.bit_width == 64 else pa.int32())
        values = np.asarray(array.to_numpy(zero_copy_only=False))
        sample = np.sort(values[:: max(1, len(values) // RANK_SAMPLE)])
        return np.asarray(np.searchsorted(sample, values, side="left"), dtype=np.uint64)
    rank = pc.rank(column, sort_keys="ascending", tiebreaker="dense")
    return np.asarray(rank.to_numpy(), dtype=np.uint64) - np.uint64(1)


_SPREAD = {
    1: [],
    2: [(16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333), (1, 0x5555555555555555)],
    3: [(32, 0x001F00000000FFFF), (16, 0x001F0000FF0000FF), (8, 0x100F00F00F00F00F),
        (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)],
}  # fmt: skip


def _spread(values: np.ndarray, n: int) -> np.ndarray:
    """Move bit ``b`` of each value to bit ``b * n`` (the Morton "part 1 by n-1" bit trick)."""
    x = values.copy()
    for shift, mask in _SPREAD[n]:
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x
