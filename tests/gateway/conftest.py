from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .support import Calls, Gateway, running_gateway


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    """A running orchestrator with the API on, admin key ``ADMIN``, agent key ``KEY``."""
    async with running_gateway() as gateway:
        yield gateway


@pytest.fixture
def create_calls(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every call the REST layer makes to ``fleet.create_room`` (which still runs)."""
    calls: Calls = []
    original = gw.orch.fleet.create_room

    async def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return await original(*args, **kwargs)

    monkeypatch.setattr(gw.orch.fleet, "create_room", recording)
    return calls
