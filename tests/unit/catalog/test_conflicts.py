"""The commit conflict rules on plain values: no catalog database, no files."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from flowlake.catalog import conflicts
from flowlake.catalog.base import CommitRequest, Operation
from flowlake.errors import CommitConflictError


def hashes(*values: int) -> bytes:
    return np.array(sorted(values), dtype=np.uint64).tobytes()


def request(
    operation: Operation = "write",
    *,
    keys: Sequence[int] | None = (1, 2, 3),
    columns: tuple[str, ...] = (),
    **options: object,
) -> CommitRequest:
    return CommitRequest(
        instant="20260101000000000-x",
        read_version=3,
        operation=operation,
        key_hashes=None if keys is None else hashes(*keys),
        columns=columns,
        **options,  # type: ignore[arg-type]
    )


def test_disjoint_keys_rebase() -> None:
    conflicts.check_keys("ods.t", request(), 5, [4, 5], {4: (hashes(7), []), 5: (hashes(8, 9), [])})


def test_same_keys_conflict_with_the_first_overlapping_version_and_sample_hashes() -> None:
    with pytest.raises(CommitConflictError) as err:
        conflicts.check_keys("ods.t", request(), 5, [4, 5], {4: (hashes(9), []), 5: (hashes(2, 3), [])})
    exc = err.value
    assert (exc.table, exc.expected, exc.found) == ("ods.t", 3, 5)
    assert "version 5 wrote 2 of the same keys" in exc.reason
    assert not exc.mergeable and exc.conflicting_hashes == [2, 3]


def test_same_keys_disjoint_explicit_columns_are_mergeable() -> None:
    with pytest.raises(CommitConflictError) as err:
        conflicts.check_keys("ods.t", request(columns=("status",)), 4, [4], {4: (hashes(1), ["amount"])})
    assert err.value.mergeable and "mergeable" in err.value.reason


@pytest.mark.parametrize(
    ("ours", "theirs"), [(("status",), ["status", "amount"]), ((), ["amount"]), (("status",), [])]
)
def test_overlapping_or_implicit_columns_are_not_mergeable(ours: tuple[str, ...], theirs: list[str]) -> None:
    with pytest.raises(CommitConflictError) as err:
        conflicts.check_keys("ods.t", request(columns=ours), 4, [4], {4: (hashes(1), theirs)})
    assert not err.value.mergeable


def test_unknown_keys_on_either_side_are_assumed_to_overlap() -> None:
    with pytest.raises(CommitConflictError, match="version 4 wrote rows after"):
        conflicts.check_keys("ods.t", request(), 4, [4], {})
    with pytest.raises(CommitConflictError, match="version 4 wrote rows after"):
        conflicts.check_keys("ods.t", request(keys=None), 4, [4], {4: (hashes(9), [])})


def test_data_versions_keep_data_commits_and_refuse_schema_changes() -> None:
    found = conflicts.data_versions("ods.t", request(), 6, [(4, "write"), (5, "compact"), (6, "write")])
    assert found == [4, 6]
    with pytest.raises(CommitConflictError, match="version 5 changed the schema"):
        conflicts.data_versions("ods.t", request(), 6, [(4, "write"), (5, "schema")])
    evolving = request(new_schema=pa.schema([("id", pa.int64())]))
    assert conflicts.data_versions("ods.t", evolving, 5, [(4, "compact")]) == []
    with pytest.raises(CommitConflictError, match="version 4 changed the schema"):
        conflicts.data_versions("ods.t", evolving, 5, [(4, "write")])


def test_which_checks_need_reads() -> None:
    assert not conflicts.needs_key_check(request(), [])
    assert conflicts.needs_key_check(request(), [4])
    assert not conflicts.needs_key_check(request("compact", conflicts_with_writes=False), [4])
    assert not conflicts.needs_bucket_check(request(), [4])
    assert conflicts.needs_bucket_check(request(guarded_buckets=(1,)), [4])
    assert not conflicts.needs_bucket_check(request(guarded_buckets=(1,)), [])


def test_guarded_buckets_conflict_only_when_touched() -> None:
    split = request("compact", guarded_buckets=(2, 3), conflicts_with_writes=False)
    conflicts.check_guarded_buckets("ods.t", split, 5, [(4, {"buckets": [0, 1]}), (5, {})])
    with pytest.raises(CommitConflictError, match=r"version 5 wrote to buckets \[3\]"):
        conflicts.check_guarded_buckets("ods.t", split, 5, [(4, {"buckets": [1]}), (5, {"buckets": [3, 4]})])


def test_bucket_map_moved_is_a_reroute_conflict() -> None:
    conflicts.check_bucket_map("ods.t", request(), 4, 7)  # no map version: routed by key alone
    conflicts.check_bucket_map("ods.t", request(map_version=2), 4, 2)
    with pytest.raises(CommitConflictError) as err:
        conflicts.check_bucket_map("ods.t", request(map_version=2), 4, 3)
    assert err.value.reroute and "from version 2 to 3" in err.value.reason


def test_files_already_replaced_conflict() -> None:
    compaction = request("compact", removed=("a.parquet", "b.parquet"))
    conflicts.check_retired("ods.t", compaction, 4, 2)
    with pytest.raises(CommitConflictError, match="already replaced"):
        conflicts.check_retired("ods.t", compaction, 4, 1)
