"""Printing and saving benchmark figures the same way in every script."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


def report(figures: Mapping[str, object], json_path: str | None) -> None:
    """Print ``figures`` as an aligned two-column table; write them as JSON if ``json_path`` is set."""
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
