"""The commit conflict rules, as pure functions over what the store read: no database here.

A writer commits against the version it read. When others committed since, the store reads what
they did (their operations, summaries, key hashes and columns) inside its commit transaction and
asks these functions whether the new commit can rebase over them; each rule raises
``CommitConflictError`` naming the table, both versions and the reason. In order:

1. :func:`check_bucket_map`: a writer that routed rows by an older bucket map must route again.
2. :func:`data_versions`: a schema change conflicts with every data commit (and vice versa).
3. :func:`check_guarded_buckets`: a split or merge conflicts with writes to the buckets it rewrites.
4. :func:`check_keys`: commits that wrote the same keys conflict; *mergeable* when both wrote
   disjoint, explicit column sets. Exact 64-bit key hashes: a false conflict needs a hash
   collision, about n·m/2⁶⁴ for commits of n and m keys.
5. :func:`check_retired`: a commit that replaces files others already replaced conflicts.

>>> import numpy as np
>>> from flowlake.catalog.base import CommitRequest
>>> ours = CommitRequest(instant="i", operation="write", read_version=3,
...                      key_hashes=np.array([1, 2], dtype=np.uint64).tobytes(), columns=("status",))
>>> theirs = {4: (np.array([2, 9], dtype=np.uint64).tobytes(), ["amount"])}
>>> try:
...     check_keys("ods.orders", ours, 4, [4], theirs)
... except CommitConflictError as exc:
...     print(exc.mergeable, exc.conflicting_hashes)
True [2]
>>> check_keys("ods.orders", ours, 4, [4], {4: (np.array([7], dtype=np.uint64).tobytes(), [])})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from flowlake.catalog.base import DATA_OPERATIONS, CommitRequest
from flowlake.errors import CommitConflictError

__all__ = [
    "check_bucket_map",
    "check_guarded_buckets",
    "check_keys",
    "check_retired",
    "data_versions",
    "needs_bucket_check",
    "needs_key_check",
]


def check_bucket_map(name: str, request: CommitRequest, head: int, current_map: int) -> None:
    """Refuse a commit routed by another bucket-map version than the table's (a *reroute* conflict).

    Args:
        name: The table's qualified name, for the message.
        request: The commit; ``map_version`` None means it did not route by the map.
        head: The table's current version.
        current_map: The version of the table's bucket map now (0 when it has none).
    """
    if request.map_version is not None and current_map != request.map_version:
        raise CommitConflictError(
            name, request.read_version, head,
            reason=f"the bucket map moved from version {request.map_version} to {current_map} "
            "(a split or merge); rows must be routed again",
            reroute=True,
        )  # fmt: skip


def data_versions(
    name: str, request: CommitRequest, head: int, intervening: Iterable[tuple[int, str]]
) -> list[int]:
    """The data commits among those since the read version, refusing any schema conflict.

    Args:
        name: The table's qualified name, for the message.
        request: The commit being completed.
        head: The table's current version.
        intervening: ``(version, operation)`` of every commit after ``request.read_version``.

    Raises:
        CommitConflictError: If one of them changed the schema, or this commit changes the schema
            and one of them changed data.
    """
    found = []
    for version, operation in intervening:
        if operation == "schema" or (request.new_schema is not None and operation in DATA_OPERATIONS):
            raise CommitConflictError(
                name, request.read_version, head, reason=f"version {version} changed the schema"
            )
        if operation in DATA_OPERATIONS:
            found.append(int(version))
    return found


def needs_bucket_check(request: CommitRequest, versions: Sequence[int]) -> bool:
    """Whether :func:`check_guarded_buckets` has anything to compare (so the store reads summaries)."""
    return bool(request.guarded_buckets) and bool(versions)


def check_guarded_buckets(
    name: str, request: CommitRequest, head: int, summaries: Iterable[tuple[int, Mapping[str, Any]]]
) -> None:
    """Refuse a split or merge when a data commit since its read wrote to the buckets it rewrites.

    Args:
        name: The table's qualified name, for the message.
        request: The commit; ``guarded_buckets`` are the buckets it splits or merges.
        head: The table's current version.
        summaries: ``(version, summary)`` of the intervening data commits; ``summary["buckets"]``
            lists the buckets each wrote.
    """
    guarded = set(request.guarded_buckets)
    for version, summary in summaries:
        touched = set(summary.get("buckets", [])) & guarded
        if touched:
            raise CommitConflictError(
                name, request.read_version, head,
                reason=f"version {version} wrote to buckets {sorted(touched)} that this commit "
                "splits or merges; run it again",
            )  # fmt: skip


def needs_key_check(request: CommitRequest, versions: Sequence[int]) -> bool:
    """Whether :func:`check_keys` has anything to compare (so the store reads written keys)."""
    return request.conflicts_with_writes and bool(versions)


def check_keys(
    name: str,
    request: CommitRequest,
    head: int,
    versions: Sequence[int],
    written: Mapping[int, tuple[bytes, Sequence[str]]],
) -> None:
    """Refuse a commit that wrote keys an intervening data commit also wrote.

    Args:
        name: The table's qualified name, for the message.
        request: The commit; its ``key_hashes`` (uint64 bytes) and ``columns``.
        head: The table's current version.
        versions: The intervening data commits, in order.
        written: ``{version: (key hashes, columns)}`` of those that recorded their keys; a version
            missing here (or a request without key hashes) is assumed to overlap.

    Raises:
        CommitConflictError: On the first overlapping commit; ``mergeable`` when both sides wrote
            disjoint, explicit column sets, with up to five of the shared key hashes.
    """
    ours = np.frombuffer(request.key_hashes, dtype=np.uint64) if request.key_hashes is not None else None
    for version in versions:
        if ours is None or version not in written:  # unknown keys on either side: assume overlap
            raise CommitConflictError(
                name, request.read_version, head,
                reason=f"version {version} wrote rows after this commit read the table",
            )  # fmt: skip
        blob, their_columns = written[version]
        overlap = np.intersect1d(ours, np.frombuffer(blob, dtype=np.uint64), assume_unique=True)
        if len(overlap) == 0:
            continue
        mergeable = (
            bool(request.columns) and bool(their_columns) and not set(request.columns) & set(their_columns)
        )
        raise CommitConflictError(
            name, request.read_version, head,
            reason=f"version {version} wrote {len(overlap)} of the same keys"
            + (" (disjoint columns: mergeable)" if mergeable else ""),
            mergeable=mergeable, conflicting_hashes=[int(h) for h in overlap[:5]],
        )  # fmt: skip


def check_retired(name: str, request: CommitRequest, head: int, retired: int) -> None:
    """Refuse a commit when fewer of the files it replaces were live than it names.

    Args:
        name: The table's qualified name, for the message.
        request: The commit; ``removed`` are the paths it retires.
        head: The table's current version.
        retired: How many of them the store could still retire.
    """
    if retired != len(request.removed):
        raise CommitConflictError(
            name, request.read_version, head, reason="files this commit replaces were already replaced"
        )
