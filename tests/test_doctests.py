"""The examples in the docstrings run: the front door, the operators, the testing helpers."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "flowlake.lake",
    "flowlake.catalog.conflicts",
    "flowlake.changelog",
    "flowlake.flow",
    "flowlake.flow.aggs",
    "flowlake.flow.batch",
    "flowlake.flow.lake",
    "flowlake.flow.operators",
    "flowlake.flow.verify",
    "flowlake.testing",
    "flowlake.testing.changelogs",
    "flowlake.testing.load",
    "flowlake.testing.oracle",
    "flowlake.testing.services",
    "flowlake.testing.tables",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
