"""The examples in the CDC package's docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "flowlake.cdc.batch",
    "flowlake.cdc.envelope",
    "flowlake.cdc.binlog_wire",
    "flowlake.cdc.handoff",
    "flowlake.cdc.mysql_events",
    "flowlake.cdc.mysql_rows",
    "flowlake.cdc.pending",
    "flowlake.cdc.source",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    assert result.attempted > 0, f"no examples in {name}"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
