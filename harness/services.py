"""Skipping (or, in CI, failing) a test whose service this machine lacks.

A test that needs a service that this machine lacks is skipped with the reason, unless
``FLOWLAKE_REQUIRE_SERVICES=1`` is set (as CI does), in which case it fails.
"""

from __future__ import annotations

import os

import pytest


def services_required() -> bool:
    """Whether a missing service is a failure rather than a skip."""
    return os.environ.get("FLOWLAKE_REQUIRE_SERVICES", "") not in ("", "0", "false")


def require_service(available: bool, reason: str) -> None:
    """Skip the running test (or fail it, if services are required) when ``available`` is False."""
    if available:
        return
    if services_required():
        pytest.fail(f"required service missing (FLOWLAKE_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)
