"""What the tests' real engines share (redis_server, postgres_server, s3_server): a free
loopback port, and the rule for a missing engine: the test fails in CI (``CI=true``) and
skips, with the reason, elsewhere (as ``shared_data`` in ``conftest.py``)."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

__all__ = ["free_port", "missing"]


def free_port() -> int:
    """A loopback port free now (another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing(message: str) -> NoReturn:
    """An engine the test needs is not installed: fail in CI, skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
