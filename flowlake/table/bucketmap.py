"""The scalable hash index: a versioned map from key hashes to buckets that can split and merge.

A table starts with ``n`` root buckets: a key's root is ``hash % n``. Inside a root, buckets form a
binary trie over the bits of ``hash // n`` (extendible hashing): a bucket of depth ``d`` holds the keys
whose low ``d`` bits equal its ``sub`` value. Splitting a bucket makes two children of depth ``d + 1``
(the next bit 0 or 1); merging two such siblings makes their parent again. Every bucket that appears
gets a fresh id, so files of a split bucket are never confused with its children's.

Routing is a pure function of the key hash and the map — no reads of history — computed for a whole
batch with one numpy gather. The map is table metadata with a version; a split or merge happens in a
compaction commit that rewrites exactly the affected buckets' rows, atomically with the new map.

A map can also *fence* buckets until a deadline: writers do not commit to a fenced bucket (they wait
for the split that fenced it to land, or for the deadline to pass). Fencing does not change routing;
it is the last resort of a split that cannot catch up with the writers of its bucket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson

from flowlake.errors import InvalidArgumentError

MAX_DEPTH = 16
"""Deepest split below a root bucket (2**16 buckets per root)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One leaf of the map."""

    id: int
    root: int
    depth: int
    sub: int


@dataclass(frozen=True)
class BucketMap:
    """Where every key hash goes; immutable, with a version that moves on each change."""

    roots: int
    buckets: tuple[Bucket, ...]
    next_id: int
    version: int = 0
    fences: tuple[tuple[int, int], ...] = ()
    """``(bucket id, until epoch ms)``: buckets that writers must not commit to before that time."""

    @classmethod
    def initial(cls, roots: int) -> BucketMap:
        """``roots`` buckets of depth 0 with ids ``0 .. roots-1`` (the same routing as ``hash % roots``)."""
        return cls(roots, tuple(Bucket(r, r, 0, 0) for r in range(roots)), roots, 0)

    @classmethod
    def from_json(cls, data: str | None, roots: int) -> BucketMap:
        """Parse the catalog's form (None means the initial map)."""
        if not data:
            return cls.initial(roots)
        raw = orjson.loads(data)
        fences = tuple((int(b), int(until)) for b, until in raw.get("fences", []))
        buckets = tuple(Bucket(*b) for b in raw["buckets"])
        return cls(raw["roots"], buckets, raw["next_id"], raw["version"], fences)

    def to_json(self) -> str:
        """The catalog's form."""
        buckets = [[b.id, b.root, b.depth, b.sub] for b in self.buckets]
        body: dict[str, object] = {
            "roots": self.roots, "buckets": buckets, "next_id": self.next_id, "version": self.version,
        }  # fmt: skip
        if self.fences:
            body["fences"] = [list(f) for f in self.fences]
        return orjson.dumps(body).decode()

    def fence(self, bucket_ids: Iterable[int], until_ms: int) -> BucketMap:
        """The same routing, with ``bucket_ids`` fenced until ``until_ms`` (a new map version)."""
        ids = sorted(set(bucket_ids))
        for b in ids:
            self.bucket(b)
        kept = tuple(f for f in self.fences if f[0] not in ids)
        fences = kept + tuple((b, until_ms) for b in ids)
        return dataclasses.replace(self, fences=fences, version=self.version + 1)

    def unfenced(self) -> BucketMap:
        """The same routing without fences (a new map version)."""
        return dataclasses.replace(self, fences=(), version=self.version + 1)

    def fenced(self, bucket_ids: Iterable[int], now_ms: int) -> list[tuple[int, int]]:
        """The fences among ``bucket_ids`` that still hold at ``now_ms``: ``(bucket, until_ms)``."""
        wanted = set(bucket_ids)
        return [f for f in self.fences if f[0] in wanted and f[1] > now_ms]

    def expired_fences(self, now_ms: int) -> bool:
        """Whether some fence's deadline has passed (a writer may then lift the fences)."""
        return any(until <= now_ms for _, until in self.fences)

    def is_leaf(self, bucket_id: int) -> bool:
        """Whether ``bucket_id`` is a bucket of this map."""
        return any(b.id == bucket_id for b in self.buckets)

    def bucket(self, bucket_id: int) -> Bucket:
        """The leaf with this id."""
        for b in self.buckets:
            if b.id == bucket_id:
                return b
        raise InvalidArgumentError(f"bucket {bucket_id} is not in the bucket map (version {self.version})")

    @property
    def depth(self) -> int:
        """The deepest leaf's depth."""
        return max(b.depth for b in self.buckets)

    def _lookup(self) -> np.ndarray:
        depth = self.depth
        size = 1 << depth
        table = np.full(self.roots * size, -1, dtype=np.int32)
        for b in self.buckets:
            # every depth-D suffix whose low b.depth bits equal b.sub belongs to b
            subs = np.arange(b.sub, size, 1 << b.depth)
            table[b.root * size + subs] = b.id
        return table

    def route(self, hashes: np.ndarray) -> np.ndarray:
        """The bucket id (int32) of every key hash."""
        roots = np.uint64(self.roots)
        size = np.uint64(1 << self.depth)
        index = (hashes % roots) * size + ((hashes // roots) & (size - np.uint64(1)))
        return self._lookup()[index.astype(np.int64)]

    def split(self, bucket_id: int) -> tuple[BucketMap, Bucket, Bucket]:
        """Replace a bucket by its two children (one more hash bit)."""
        b = self.bucket(bucket_id)
        if b.depth >= MAX_DEPTH:
            raise InvalidArgumentError(f"bucket {bucket_id} is at the maximum depth {MAX_DEPTH}")
        low = Bucket(self.next_id, b.root, b.depth + 1, b.sub)
        high = Bucket(self.next_id + 1, b.root, b.depth + 1, b.sub | (1 << b.depth))
        rest = tuple(x for x in self.buckets if x.id != bucket_id)
        fences = tuple(f for f in self.fences if f[0] != bucket_id)
        split = BucketMap(self.roots, (*rest, low, high), self.next_id + 2, self.version + 1, fences)
        return split, low, high

    def sibling(self, bucket_id: int) -> Bucket | None:
        """The other child of this bucket's parent, if it is a leaf."""
        b = self.bucket(bucket_id)
        if b.depth == 0:
            return None
        other_sub = b.sub ^ (1 << (b.depth - 1))
        for x in self.buckets:
            if x.root == b.root and x.depth == b.depth and x.sub == other_sub:
                return x
        return None

    def merge(self, bucket_id: int) -> tuple[BucketMap, Bucket]:
        """Replace a bucket and its sibling by their parent."""
        b = self.bucket(bucket_id)
        other = self.sibling(bucket_id)
        if other is None:
            raise InvalidArgumentError(f"bucket {bucket_id} has no leaf sibling to merge with")
        parent = Bucket(self.next_id, b.root, b.depth - 1, b.sub & ((1 << (b.depth - 1)) - 1))
        rest = tuple(x for x in self.buckets if x.id not in (b.id, other.id))
        fences = tuple(f for f in self.fences if f[0] not in (b.id, other.id))
        return BucketMap(self.roots, (*rest, parent), self.next_id + 1, self.version + 1, fences), parent
