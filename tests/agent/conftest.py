from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fleet_agent import FleetAgent, Room

from .fake_orchestrator import KEY, FakeOrchestrator, running_fake_orchestrator
from .support import FAST, CountingRooms


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrchestrator]:
    async with running_fake_orchestrator() as fake:
        yield fake


@pytest.fixture
def rooms() -> CountingRooms:
    manager = CountingRooms()
    manager.define("match", Room)
    manager.define("lobby", Room)
    return manager


@pytest.fixture
async def make_agent(
    fake: FakeOrchestrator, rooms: CountingRooms
) -> AsyncIterator[Callable[..., FleetAgent]]:
    """Factory for agents pointed at the fake; every one is disconnected at teardown."""
    made: list[FleetAgent] = []

    def make(host: Any = None, **options: Any) -> FleetAgent:
        options.setdefault("url", fake.url)
        options.setdefault("key", KEY)
        options.setdefault("endpoint_url", "ws://127.0.0.1:9000")
        options.setdefault("name", "eu1")
        options.setdefault("backoff", FAST)
        agent = FleetAgent(rooms if host is None else host, **options)
        if host is None:
            rooms.agent = agent
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.disconnect()
