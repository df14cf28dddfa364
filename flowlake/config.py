"""One configuration object, read from flags, then ``FLOWLAKE_*`` environment variables, then
``flowlake.toml`` (searched from the current folder upwards), then defaults.

The embedded default is a folder ``./.flowlake`` holding a SQLite catalog and a file warehouse.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowlake.errors import InvalidArgumentError

DEFAULT_HOME = ".flowlake"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the catalog and the warehouse are, and who is acting."""

    catalog: str
    warehouse: str
    principal: str

    @classmethod
    def resolve(
        cls,
        *,
        catalog: str | None = None,
        warehouse: str | None = None,
        principal: str | None = None,
        cwd: Path | None = None,
    ) -> Settings:
        """Fill each setting from the first source that has it: argument, env, flowlake.toml, default."""
        cwd = cwd or Path.cwd()
        file_values = _read_toml(cwd)
        home = cwd / DEFAULT_HOME
        return cls(
            catalog=catalog
            or os.environ.get("FLOWLAKE_CATALOG")
            or file_values.get("catalog")
            or f"sqlite:///{home / 'catalog.db'}",
            warehouse=warehouse
            or os.environ.get("FLOWLAKE_WAREHOUSE")
            or file_values.get("warehouse")
            or (home / "warehouse").as_uri(),
            principal=principal
            or os.environ.get("FLOWLAKE_PRINCIPAL")
            or file_values.get("principal")
            or getpass.getuser(),
        )


def _read_toml(cwd: Path) -> dict[str, str]:
    for folder in [cwd, *cwd.parents]:
        path = folder / "flowlake.toml"
        if path.is_file():
            try:
                data: dict[str, Any] = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise InvalidArgumentError(f"{path}: not valid TOML: {exc}") from exc
            section = data.get("flowlake", data)
            return {k: str(v) for k, v in section.items() if k in {"catalog", "warehouse", "principal"}}
    return {}
