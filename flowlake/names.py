"""Validation of user-given names: namespaces, tables and columns.

Names become path segments in the warehouse and identifiers in SQL, so they are checked against one
strict pattern before they reach either: lowercase letters, digits and underscores, starting with a
letter or underscore, at most 63 characters. That excludes ``..``, ``/``, quotes and every other path or
SQL trick by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from flowlake.changelog import RESERVED_COLUMNS
from flowlake.errors import InvalidNameError

_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COLUMN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def validate_name(name: str, *, kind: str = "name") -> str:
    """Return ``name`` if it is a valid namespace or table name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid {kind} {name!r}: use lowercase letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return name


def validate_column(name: str, *, table: str) -> str:
    """Return ``name`` if it is a valid, non-reserved column name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _COLUMN.fullmatch(name):
        raise InvalidNameError(
            f"table {table!r}: invalid column name {name!r}; use letters, digits and underscores"
        )
    if name in RESERVED_COLUMNS:
        raise InvalidNameError(f"table {table!r}: column name {name!r} is reserved for changelogs")
    return name


_CONSUMER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@-]{0,254}")


def validate_consumer(name: str) -> str:
    """Return ``name`` if it is a valid consumer name (letters, digits, ``_.:/@-``)."""
    if not isinstance(name, str) or not _CONSUMER.fullmatch(name):
        raise InvalidNameError(
            f"invalid consumer name {name!r}: use letters, digits and _.:/@- (at most 255)"
        )
    return name


@dataclass(frozen=True, slots=True)
class TableName:
    """A validated ``namespace.table`` identifier."""

    namespace: str
    table: str

    @classmethod
    def parse(cls, qualified: str) -> TableName:
        """Parse ``"ods.orders"``; both parts are validated."""
        if not isinstance(qualified, str) or qualified.count(".") != 1:
            raise InvalidNameError(
                f"invalid table name {qualified!r}: write it as 'namespace.table', e.g. 'ods.orders'"
            )
        namespace, table = qualified.split(".")
        try:
            return cls(validate_name(namespace, kind="namespace"), validate_name(table, kind="table name"))
        except InvalidNameError as exc:
            raise InvalidNameError(f"{exc} (in {qualified!r})") from None

    def __str__(self) -> str:
        return f"{self.namespace}.{self.table}"
