from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fleet_agent import FleetAgent
from tests.support.agents import FleetAgents, define_rooms

from .fake_orchestrator import KEY, FakeOrchestrator, running_fake_orchestrator
from .support import FAST, CountingRooms


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrchestrator]:
    async with running_fake_orchestrator() as fake:
        yield fake


@pytest.fixture
def rooms() -> CountingRooms:
    return define_rooms(CountingRooms(), "match", "lobby")


@pytest.fixture
async def make_agent(
    fake: FakeOrchestrator, rooms: CountingRooms
) -> AsyncIterator[Callable[..., FleetAgent]]:
    """Factory for agents pointed at the fake; every one is disconnected at teardown."""
    async with FleetAgents(
        url=fake.url, key=KEY, endpoint_url="ws://127.0.0.1:9000", backoff=FAST
    ) as factory:

        def make(host: Any = None, **options: Any) -> FleetAgent:
            agent = factory(rooms if host is None else host, **options)
            if host is None:
                rooms.agent = agent
            return agent

        yield make
