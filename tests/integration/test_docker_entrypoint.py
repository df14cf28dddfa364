"""There is no Docker engine here: the image's entry point is tested as a plain process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    path = os.environ["PATH"]
    full_env = {"PATH": f"{Path(sys.executable).parent}:{path}", "COLUMNS": "120", **env}
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), *args],
        env=full_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_entrypoint_runs_the_cli_with_env_config(tmp_path: Path) -> None:
    env = {
        "FLOWLAKE_CATALOG": f"sqlite:///{tmp_path / 'c.db'}",
        "FLOWLAKE_WAREHOUSE": (tmp_path / "wh").as_uri(),
    }
    result = entrypoint(env, "tables")
    assert result.returncode == 0, result.stderr
    assert "tables" in result.stdout
    assert (tmp_path / "c.db").exists()


def test_entrypoint_requires_catalog_and_warehouse() -> None:
    result = entrypoint({}, "tables")
    assert result.returncode != 0
    assert "set FLOWLAKE_CATALOG" in result.stderr


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
