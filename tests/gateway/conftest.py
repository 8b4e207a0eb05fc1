from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import Gateway, running_gateway


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    """A running orchestrator with the API on, admin key ``ADMIN``, agent key ``KEY``."""
    async with running_gateway() as gateway:
        yield gateway
