"""The examples in the docstrings run: the front door, the operators, the testing helpers."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import flowlake.flow

MODULES = [
    "flowlake.lake",
    "flowlake.table.policy",
    "flowlake.table.services",
    "flowlake.catalog.conflicts",
    "flowlake.changelog",
    "flowlake.flow",
    "flowlake.flow._topn",
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


def test_every_public_operator_has_an_example() -> None:
    missing = []
    for name in flowlake.flow.__all__:
        obj = getattr(flowlake.flow, name)
        if inspect.ismodule(obj):
            members = [getattr(obj, n) for n in dir(obj) if not n.startswith("_")]
            targets = [m for m in members if inspect.isfunction(m) and m.__module__ == obj.__name__]
        else:
            targets = [obj]
        missing += [t.__qualname__ for t in targets if ">>>" not in (inspect.getdoc(t) or "")]
    assert missing == [], f"public operators without a doctested example: {missing}"
