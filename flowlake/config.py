"""One configuration object, read from flags, then ``FLOWLAKE_*`` environment variables, then
a config file, then defaults.

The config file is ``flowlake.toml`` in the current folder, or the file named by ``--config`` /
``FLOWLAKE_CONFIG``; parent folders are never searched, so a file planted higher up (``/tmp``)
cannot set the principal or the catalog of everything below it.

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
        config: Path | str | None = None,
    ) -> Settings:
        """Fill each setting from the first source that has it: argument, env, config file, default.

        Args:
            catalog: Catalog URL (beats ``FLOWLAKE_CATALOG`` and the file).
            warehouse: Warehouse URI (beats ``FLOWLAKE_WAREHOUSE`` and the file).
            principal: Who acts (beats ``FLOWLAKE_PRINCIPAL`` and the file).
            cwd: The folder whose ``flowlake.toml`` and ``.flowlake`` are used (default: the current one).
            config: A config file to read instead of ``cwd/flowlake.toml`` (default ``FLOWLAKE_CONFIG``).

        Raises:
            InvalidArgumentError: An explicit config file does not exist or is not valid TOML.
        """
        cwd = cwd or Path.cwd()
        explicit = config or os.environ.get("FLOWLAKE_CONFIG") or None
        if explicit is not None and not Path(explicit).is_file():
            source = "--config" if config else "FLOWLAKE_CONFIG"
            raise InvalidArgumentError(f"config file {str(explicit)!r} (from {source}) does not exist")
        file_values = _read_toml(Path(explicit) if explicit else cwd / "flowlake.toml")
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


def mib_setting(env: str, default_mb: float) -> float:
    """A memory size in MiB from the environment variable ``env`` (else ``default_mb``).

    >>> mib_setting("FLOWLAKE_UNSET_FOR_DOCTEST", 64.0)
    64.0

    Raises:
        InvalidArgumentError: The variable is set to something that is not a number.
    """
    text = os.environ.get(env) or ""
    try:
        return float(text) if text else default_mb
    except ValueError as exc:
        raise InvalidArgumentError(f"{env} must be a number of MiB, got {text!r}") from exc


def _read_toml(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"{path}: not valid TOML: {exc}") from exc
    section = data.get("flowlake", data)
    return {k: str(v) for k, v in section.items() if k in {"catalog", "warehouse", "principal"}}
