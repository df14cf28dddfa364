"""Row builders for the tests."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from conftest import ORDERS

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def order(
    order_id: int, shop: str = "s1", amount: str = "10.00", qty: int = 1, paid: bool = False
) -> dict[str, object]:
    """One orders row."""
    return {
        "order_id": order_id,
        "shop": shop,
        "amount": Decimal(amount),
        "qty": qty,
        "paid": paid,
        "created_at": T0 + dt.timedelta(minutes=order_id),
    }


def orders_table(rows: Iterable[dict[str, object]]) -> pa.Table:
    """An Arrow table of orders rows."""
    return pa.Table.from_pylist(list(rows), schema=ORDERS)


def changelog(rows: Iterable[tuple[int, dict[str, object]]]) -> pa.Table:
    """An Arrow changelog from ``(kind, row)`` pairs."""
    pairs = list(rows)
    table = orders_table(r for _, r in pairs)
    return table.append_column("_kind", pa.array([k for k, _ in pairs], pa.int8()))


def model_change(live: dict[Any, dict[str, Any]], op_name: str, key: Any, row: dict[str, Any]) -> list[Any]:
    """The changes ``op_name`` (insert, update, delete) of ``key`` makes to the keyed model ``live``
    (updated in place): ``+I``, ``-U``/``+U`` or ``-D`` pairs of (RowKind, row); none for an insert of
    a live key or an update or delete of a missing one."""
    from flowlake.changelog import RowKind

    old = live.get(key)
    if op_name == "insert" and old is None:
        live[key] = row
        return [(RowKind.INSERT, row)]
    if op_name == "update" and old is not None:
        live[key] = row
        return [(RowKind.UPDATE_BEFORE, old), (RowKind.UPDATE_AFTER, row)]
    if op_name == "delete" and old is not None:
        del live[key]
        return [(RowKind.DELETE, old)]
    return []


def materialize(
    view: dict[Any, dict[str, Any]], changes: pa.Table, key: Callable[[dict[str, Any]], Any]
) -> None:
    """Apply an operator's output changelog to ``view`` (rows by ``key(row)``), checking that every
    retraction carries the exact previous result and every addition follows one."""
    from flowlake.changelog import RowKind
    from flowlake.flow.batch import rows

    for change in rows(changes):
        at = key(change.row)
        if change.kind in (RowKind.UPDATE_BEFORE, RowKind.DELETE):
            assert view.pop(at) == change.row, "a retraction must carry the exact previous result"
        else:
            assert at not in view, "an addition must follow the retraction of the previous result"
            view[at] = change.row


def rows_close(a: dict[str, Any], b: dict[str, Any], relative: float) -> bool:
    """Whether row ``b`` has ``a``'s values: floats within ``relative`` (of at least 1), others equal."""
    for k, x in a.items():
        y = b[k]
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > relative * max(1.0, abs(x)):
                return False
        elif x != y:
            return False
    return True


def benchmark_figures(script: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` with ``args`` and ``--json out`` in a subprocess; its figures."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    run = subprocess.run(
        [sys.executable, str(path), *args, "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures
