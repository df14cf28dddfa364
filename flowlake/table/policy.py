"""A table's maintenance policy: typed, validated table properties with defaults.

The table services (:mod:`flowlake.table.services`, ``flowlake maintain``) read each table's policy
from its properties. ``Catalog.create_table`` writes the ``maintain.*`` defaults into a new table's
properties, so ``flowlake status`` shows them and a later change of the defaults here does not change
existing tables; a table created before has none and gets the defaults below. Change them with
``LakeTable.set_properties`` or ``flowlake table set T key=value``; both validate every value and
name the key and what it accepts when one does not fit.

>>> p = MaintenancePolicy.from_properties({"maintain.clean.retain_for": "2h"})
>>> p.clean_retain_for, p.clean_retain_last
(7200.0, 10)
>>> validate_updates({"maintain.compact.log_files": "0"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
flowlake.errors.InvalidArgumentError: table property 'maintain.compact.log_files' must be an integer ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowlake.errors import InvalidArgumentError
from flowlake.table.clustering import parse_cluster_columns, parse_columns

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZES = {"b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3, "gib": 1024**3}


def parse_duration(text: str) -> float:
    """Seconds in ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a plain number of seconds.

    >>> parse_duration("5m"), parse_duration("1.5"), parse_duration("250ms")
    (300.0, 1.5, 0.25)
    """
    found = _DURATION.match(str(text))
    if found is None:
        raise ValueError(text)
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_size(text: str) -> int:
    """Bytes in ``"64MB"``, ``"512kb"``, ``"1GiB"`` (powers of 1024) or a plain number of bytes.

    >>> parse_size("64MB"), parse_size("1000")
    (67108864, 1000)
    """
    found = _SIZE.match(str(text))
    if found is None:
        raise ValueError(text)
    return int(found.group(1)) * _SIZES[(found.group(2) or "b").lower()]


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(text)
    return value == "true"


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One settable table property: how to parse it, its allowed values and its default."""

    key: str
    parse: Callable[[str], Any]
    allowed: str
    """What it accepts, for error messages (``an integer from 1 to 100000``)."""
    default: str | None
    """The default as text (None: unset unless set, the feature is off)."""
    meaning: str
    low: float | None = None
    high: float | None = None

    def value(self, text: str) -> Any:
        """Parse and range-check ``text``.

        Raises:
            InvalidArgumentError: Naming the key, the value and what the key accepts.
        """
        try:
            parsed = self.parse(text)
        except (ValueError, TypeError):
            parsed = None
        if (
            parsed is None
            or (self.low is not None and parsed < self.low)
            or (self.high is not None and parsed > self.high)
        ):
            raise InvalidArgumentError(
                f"table property {self.key!r} must be {self.allowed}, got {str(text)!r} ({self.meaning})"
            )
        return parsed


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(text)
        return text

    return parse


_DAY = 86_400.0
SPECS: dict[str, PropertySpec] = {
    s.key: s
    for s in (
        PropertySpec("maintain.enabled", _bool, "true or false", "true",
                     "whether `flowlake maintain` looks after this table"),
        PropertySpec("maintain.compact.log_files", int, "an integer from 1 to 100000", "8",
                     "compact when a bucket holds this many log files", 1, 100_000),
        PropertySpec("maintain.compact.log_rows", int, "an integer from 1 to 10^12", "200000",
                     "compact when a bucket's log files hold this many rows", 1, 10**12),
        PropertySpec("maintain.compact.log_bytes", parse_size, "a size such as 64MB (1 byte to 1TB)",
                     "64MB", "compact when the table's log files take this many bytes", 1, 1024**4),
        PropertySpec("maintain.compact.max_age", parse_duration, "a duration such as 10m (0 to 30d)",
                     "10m", "compact when the oldest log file is this old", 0, 30 * _DAY),
        PropertySpec("maintain.rebalance", _bool, "true or false", "true",
                     "split buckets over bucket_target_rows and merge small siblings"),
        PropertySpec("maintain.clean.retain_last", int, "an integer from 1 to 10^9", "10",
                     "cleaning keeps at least this many versions readable", 1, 10**9),
        PropertySpec("maintain.clean.retain_for", parse_duration, "a duration such as 15m (0 to 3650d)",
                     "15m", "cleaning keeps every version this young readable (besides retain_last)",
                     0, 3650 * _DAY),
        PropertySpec("maintain.clean.consumer_max_lag", parse_duration,
                     "a duration such as 7d (0 for no bound, up to 3650d)", "7d",
                     "cleaning drops a consumer or pin whose version is older than this (0: never), "
                     "so no reader can hold history, and storage, forever", 0, 3650 * _DAY),
        PropertySpec("maintain.clean.interval", parse_duration, "a duration such as 60s (0 to 30d)",
                     "60s", "clean at most this often", 0, 30 * _DAY),
        PropertySpec("maintain.orphan_grace", parse_duration, "a duration such as 1h (1s to 30d)", "1h",
                     "files of unfinished commits older than this are deleted; keep it above the "
                     "longest commit", 1, 30 * _DAY),
        PropertySpec("log_backlog_compact", int, "an integer from 1 to 10^6", None,
                     "the stall limit: a writer that leaves more live log files than this compacts "
                     "before returning (off when unset)", 1, 10**6),
        PropertySpec("target_file_rows", int, "an integer from 1 to 10^9", None,
                     "rows per base file that compaction writes (default 1000000)", 1, 10**9),
        PropertySpec("bucket_target_rows", int, "an integer from 1 to 10^10", None,
                     "split a bucket over this many rows (default 2000000)", 1, 10**10),
        PropertySpec("split_catchup_rounds", int, "an integer from 1 to 100", None,
                     "catch-up rounds a split tries before fencing its bucket (default 3)", 1, 100),
        PropertySpec("bucket_fence_seconds", float, "a number of seconds from 0.001 to 600", None,
                     "longest a split may fence writers off a bucket (default 3)", 0.001, 600),
        PropertySpec("sort_by", parse_columns, "column names separated by commas (empty unsets)", None,
                     "compaction sorts base files by these columns (then the key), so range filters "
                     "on them skip row groups"),
        PropertySpec("cluster_by", parse_cluster_columns, "one to three column names separated by commas",
                     None, "compaction writes base files in Z-order of these columns (then the key), so "
                     "range filters on any of them skip row groups"),
        PropertySpec("conflict_policy", _choice("retry", "fail", "merge-columns"),
                     "one of retry, fail, merge-columns", None,
                     "what a writer does when another committed the same keys first (default retry)"),
    )
}  # fmt: skip
"""Every property ``set_properties`` accepts; others are set at creation only."""


def creation_defaults() -> dict[str, str]:
    """The ``maintain.*`` properties a new table starts with."""
    return {k: s.default for k, s in SPECS.items() if k.startswith("maintain.") and s.default is not None}


def validate_updates(updates: Mapping[str, str | None]) -> dict[str, str | None]:
    """Check property changes (None removes a property, so its default applies); return them as text.

    Raises:
        InvalidArgumentError: An unknown key (listing the settable ones), or a value that does not fit.
    """
    out: dict[str, str | None] = {}
    for key, value in updates.items():
        spec = SPECS.get(key)
        if spec is None:
            raise InvalidArgumentError(
                f"unknown or read-only table property {key!r}; "
                f"settable properties: {', '.join(sorted(SPECS))}"
            )
        if value is not None:
            spec.value(str(value))
        out[key] = None if value is None else str(value).strip()
    return out


def validate_properties(properties: Mapping[str, str]) -> None:
    """Check the settable properties among ``properties`` (others pass: they are set at creation)."""
    for key, value in properties.items():
        if key in SPECS:
            SPECS[key].value(str(value))


def _get(properties: Mapping[str, str], key: str) -> Any:
    spec = SPECS[key]
    text = properties.get(key, spec.default)
    return None if text is None else spec.value(text)


@dataclass(frozen=True, slots=True)
class MaintenancePolicy:
    """What the table services do for one table, parsed from its properties (durations in seconds)."""

    enabled: bool = True
    compact_log_files: int = 8
    compact_log_rows: int = 200_000
    compact_log_bytes: int = 64 * 1024**2
    compact_max_age: float = 600.0
    rebalance: bool = True
    clean_retain_last: int = 10
    clean_retain_for: float = 900.0
    clean_consumer_max_lag: float = 7 * _DAY
    """Consumers and pins further behind than this (by their version's commit time) are dropped."""
    clean_interval: float = 60.0
    orphan_grace: float = 3600.0
    stall_log_files: int | None = None
    """``log_backlog_compact``: writers compact inline past this many live log files (None: never)."""

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> MaintenancePolicy:
        """The policy a table's properties describe (defaults for those not set).

        Raises:
            InvalidArgumentError: A property holds a value that does not fit (set outside the API).
        """
        return cls(
            enabled=_get(properties, "maintain.enabled"),
            compact_log_files=_get(properties, "maintain.compact.log_files"),
            compact_log_rows=_get(properties, "maintain.compact.log_rows"),
            compact_log_bytes=_get(properties, "maintain.compact.log_bytes"),
            compact_max_age=_get(properties, "maintain.compact.max_age"),
            rebalance=_get(properties, "maintain.rebalance"),
            clean_retain_last=_get(properties, "maintain.clean.retain_last"),
            clean_retain_for=_get(properties, "maintain.clean.retain_for"),
            clean_consumer_max_lag=_get(properties, "maintain.clean.consumer_max_lag"),
            clean_interval=_get(properties, "maintain.clean.interval"),
            orphan_grace=_get(properties, "maintain.orphan_grace"),
            stall_log_files=_get(properties, "log_backlog_compact"),
        )

    def describe(self) -> str:
        """One line for ``flowlake status``.

        >>> for part in MaintenancePolicy().describe().split("; "): print(part)
        compact at 8 logs or 200,000 log rows per bucket, 64 MiB of logs or a 10m old log
        rebalance on
        keep 10 versions and 15m, consumers up to 7d behind
        clean every 1m
        orphans after 1h
        no stall limit
        """
        if not self.enabled:
            return "maintenance off (maintain.enabled=false)"
        stall = (
            "no stall limit"
            if self.stall_log_files is None
            else f"writers stall past {self.stall_log_files} logs"
        )
        lag = (
            "consumers of any age"
            if not self.clean_consumer_max_lag
            else f"consumers up to {_span(self.clean_consumer_max_lag)} behind"
        )
        return (
            f"compact at {self.compact_log_files} logs or {self.compact_log_rows:,} log rows per bucket, "
            f"{self.compact_log_bytes / 1024**2:,.0f} MiB of logs "
            f"or a {_span(self.compact_max_age)} old log; "
            f"rebalance {'on' if self.rebalance else 'off'}; keep {self.clean_retain_last} versions and "
            f"{_span(self.clean_retain_for)}, {lag}; clean every {_span(self.clean_interval)}; "
            f"orphans after {_span(self.orphan_grace)}; {stall}"
        )


def _span(seconds: float) -> str:
    for unit, size in (("d", _DAY), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"
