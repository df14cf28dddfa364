"""What the planning steps pass around: :class:`Relation` (a plan node and its scope) and :class:`PlanState`.

A :class:`Relation` is what a FROM item, a join or a SELECT produces: a plan node plus the scope that
maps ``(alias, column)`` to the node's internal column names, and the columns known to be equal
(join conditions), which let a key column stand for its partner. :class:`PlanState` is what the
planner's steps share while planning the views of one file.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pyarrow as pa

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN
from flowlake.sql.plan import Node
from flowlake.sql.statements import ViewDefinition

KEEP = "__keep"
"""Column of a :class:`~flowlake.sql.plan.Calc` query that holds its filter's verdict."""


def body(schema: pa.Schema) -> pa.Schema:
    """``schema`` without the changelog's kind and sequence columns and the filter verdict."""
    return pa.schema([f for f in schema if f.name not in (KIND_COLUMN, SEQ_COLUMN, KEEP)])


@dataclass
class Relation:
    """A plan node with the names under which its columns are visible."""

    node: Node
    scope: dict[tuple[str, str], str]
    names: list[str] = field(default_factory=list)
    """Output column names, in order (for SELECT results; a table's columns for a table)."""
    equal: list[frozenset[str]] = field(default_factory=list)

    def alias(self, alias: str) -> Relation:
        """The relation as a FROM item named ``alias``."""
        scope = {(alias, name): self.scope[("", name)] for name in self.names}
        return Relation(self.node, scope, list(self.names), list(self.equal))

    def partners(self, column: str) -> set[str]:
        """``column`` and every column known to equal it."""
        out = {column}
        for group in self.equal:
            if column in group:
                out |= group
        return out


class PlanState:
    """The view being planned, its late-data table and key SQL, and fresh internal column names."""

    def __init__(self) -> None:
        self.view: ViewDefinition | None = None
        self.late_table: str | None = None
        """The late-data table of the view being planned, once a windowed aggregate claimed one."""
        self.late_keys: list[str] = []
        """SQL of the key columns of the late table (its verify exclusion)."""
        self._names = itertools.count()

    def start(self, view: ViewDefinition) -> None:
        """Begin planning ``view``: no late table yet."""
        self.view, self.late_table, self.late_keys = view, None, []

    @property
    def view_name(self) -> str:
        """The name of the view being planned, for error messages."""
        return self.view.name if self.view else "?"

    def option(self, name: str) -> str | None:
        """The view's ``WITH (name = ...)`` option, if given."""
        return self.view.options.get(name) if self.view is not None else None

    def fresh(self, prefix: str) -> str:
        """A column name no other plan node of this planner uses."""
        return f"{prefix}{next(self._names)}"
