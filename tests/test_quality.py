"""The tree stays ruff-clean, formatted and mypy --strict clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["flowlake", "harness", "tests", "benchmarks", "dataflows"]


def tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs the dev extra")
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)


def test_ruff_lint() -> None:
    result = run(tool("ruff"), "check", *TARGETS)
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_format() -> None:
    result = run(tool("ruff"), "format", "--check", *TARGETS)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.slow
def test_mypy_strict() -> None:
    result = run(tool("mypy"))
    assert result.returncode == 0, result.stdout[-4000:]


LAYERS: list[set[str]] = [
    {"cli", "ui"},
    {"demo"},
    {"sql", "query"},
    {"flow"},
    {"cdc"},
    {"lake", "status", "testing"},
    {"table"},
    {"catalog"},
    {"io", "config", "names", "errors", "changelog", "runtime"},
]
"""flowlake's packages and top-level modules from the top layer down: imports point down (or sideways)."""


def _layer(part: str) -> int:
    for depth, layer in enumerate(LAYERS):
        if part in layer:
            return depth
    raise AssertionError(f"flowlake.{part} is in no layer; add it to LAYERS in tests/test_quality.py")


def _flowlake_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every flowlake import in a file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "flowlake"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "flowlake":  # from flowlake import errors
                found += [(node.lineno, f"flowlake.{a.name}") for a in node.names]
            elif node.module.split(".")[0] == "flowlake":
                found.append((node.lineno, node.module))
    return found


def layering_violations(root: Path) -> list[str]:
    """Every import in ``root/flowlake`` of a higher layer than the importing module's own."""
    out = []
    for path in sorted((root / "flowlake").rglob("*.py")):
        parts = path.relative_to(root / "flowlake").with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package root only re-exports the public API
        own = _layer(parts[0])
        for line, module in _flowlake_imports(path):
            target = module.split(".")
            if len(target) < 2 or target[1] in ("__version__",):
                continue
            if _layer(target[1]) < own:
                out.append(f"{path.relative_to(root)}:{line} imports {module} (a higher layer)")
    return out


def test_imports_point_down_the_layers() -> None:
    assert layering_violations(ROOT) == []


def private_module_imports(root: Path) -> list[str]:
    """Every import of a package's private module (``flowlake.flow._aggstate``) from outside it."""
    out = []
    for path in sorted((root / "flowlake").rglob("*.py")):
        parts = path.relative_to(root / "flowlake").parts
        for line, module in _flowlake_imports(path):
            target = module.split(".")
            private = [i for i, p in enumerate(target) if p.startswith("_") and not p.startswith("__")]
            if private and tuple(target[1 : private[0]]) != parts[: private[0] - 1]:
                out.append(f"{path.relative_to(root)}:{line} imports {module} (private to its package)")
    return out


def test_packages_use_each_others_public_modules_only() -> None:
    assert private_module_imports(ROOT) == []


def test_the_private_module_check_catches_one(tmp_path: Path) -> None:
    (tmp_path / "flowlake" / "sql").mkdir(parents=True)
    (tmp_path / "flowlake" / "flow").mkdir()
    (tmp_path / "flowlake" / "sql" / "x.py").write_text("from flowlake.flow._aggstate import A\n")
    (tmp_path / "flowlake" / "flow" / "y.py").write_text("from flowlake.flow._aggstate import A\n")
    assert private_module_imports(tmp_path) == [
        "flowlake/sql/x.py:1 imports flowlake.flow._aggstate (private to its package)"
    ]


def test_catalog_knows_nothing_of_tables() -> None:
    for path in sorted((ROOT / "flowlake" / "catalog").rglob("*.py")):
        for line, module in _flowlake_imports(path):
            assert not module.startswith(("flowlake.table", "flowlake.lake")), f"{path}:{line} {module}"


def test_the_layering_check_catches_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "flowlake"
    (package / "catalog").mkdir(parents=True)
    (package / "table").mkdir()
    (package / "catalog" / "x.py").write_text("def f() -> None:\n    from flowlake.table.table import T\n")
    (package / "table" / "y.py").write_text("from flowlake.catalog import x\nfrom flowlake import errors\n")
    assert layering_violations(tmp_path) == [
        "flowlake/catalog/x.py:2 imports flowlake.table.table (a higher layer)"
    ]
