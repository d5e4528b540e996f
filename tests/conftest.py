"""Shared fixtures. Tests talk only to loopback or to in-process ASGI apps."""

from __future__ import annotations

import os

import pytest

# Stray OAuth variables would switch the Brevo SDK to OAuth; the tests must not see the host's.
for _var in ("BREVO_CLIENT_ID", "BREVO_CLIENT_SECRET", "CONNECTOR_CONFIG"):
    os.environ.pop(_var, None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
