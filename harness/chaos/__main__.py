"""``python -m harness.chaos run ...`` (a chaos run) or ``... maintain compact|clean``."""

from __future__ import annotations

import sys

from harness.chaos.cli import main

if __name__ == "__main__":
    sys.exit(main())
