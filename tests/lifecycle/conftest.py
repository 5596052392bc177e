"""Fixtures of the lifecycle tests (tags, start from a snapshot, gc): the use-case layer
over the settings each test writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mngr.service import Service


@pytest.fixture
def service() -> Callable[[], Service]:
    """A Service over the settings as they are now (call it after writing them)."""
    from mngr.config import load

    return lambda: Service(load())
