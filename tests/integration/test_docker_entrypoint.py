"""There is no Docker engine here: the image's entry point is tested as a plain process, and the
compose file is checked for validity and consistency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def entrypoint(env: dict[str, str], *args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    bin_dir = str(path) if path else str(Path(sys.executable).parent)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "120", **env}
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), *args],
        env=full_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def fake_flowlake(tmp_path: Path) -> Path:
    """A `flowlake` that prints its arguments, one per line."""
    exe = tmp_path / "flowlake"
    exe.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    exe.chmod(0o755)
    return tmp_path


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


def test_cluster_environment_maps_to_bytewax_flags(tmp_path: Path) -> None:
    base = {
        "FLOWLAKE_CATALOG": "sqlite://",
        "FLOWLAKE_WAREHOUSE": "memory://x",
        "HOSTNAME": "lake-dws-worker-2",
    }
    cluster = base | {"FLOWLAKE_WORKERS_PER_PROCESS": "2", "FLOWLAKE_ADDRESSES": "a:2101;b:2101"}
    got = entrypoint(cluster, "run", "dataflows/dws_shop_minute.py", path=fake_flowlake(tmp_path))
    assert got.stdout.split("\n")[:-1] == [
        "run", "dataflows/dws_shop_minute.py", "-w", "2", "-a", "a:2101;b:2101", "-i", "1",
    ]  # fmt: skip
    explicit = entrypoint(cluster | {"FLOWLAKE_PROCESS_ID": "0"}, "run", "x.py", path=fake_flowlake(tmp_path))
    assert explicit.stdout.split()[-1] == "0"
    other = entrypoint(base | {"FLOWLAKE_ADDRESSES": "a:1"}, "tables", path=fake_flowlake(tmp_path))
    assert other.stdout.split() == ["tables"]  # only `run` gets cluster flags
    nohost = entrypoint(
        base | {"FLOWLAKE_ADDRESSES": "a:1", "HOSTNAME": "worker"},
        "run",
        "x.py",
        path=fake_flowlake(tmp_path),
    )
    assert nohost.returncode == 2 and "FLOWLAKE_PROCESS_ID" in nohost.stderr


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_compose_file_is_valid_and_consistent() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "metastore", "mysql", "ingester", "dws-worker"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        command = service.get("command")
        if service.get("image") == "flowlake:latest" and command and command[0] == "run":
            assert (ROOT / command[1]).exists() or command[1].startswith("dataflows/"), command
    assert all("healthcheck" in services[s] for s in ("postgres", "minio", "mysql", "metastore"))
    assert services["dws-worker"]["environment"]["FLOWLAKE_CATALOG"].startswith("postgresql://")
