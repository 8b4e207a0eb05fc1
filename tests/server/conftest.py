from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fleet_server import Orchestrator

from .raw_agent import ADMIN, KEY, RawAgent


@contextlib.asynccontextmanager
async def running_orchestrator(**options: Any) -> AsyncIterator[Orchestrator]:
    options.setdefault("agent_key", KEY)
    options.setdefault("admin_key", ADMIN)
    options.setdefault("api", False)
    orch = Orchestrator(host="127.0.0.1", port=0, **options)
    await orch.listen()
    try:
        yield orch
    finally:
        await orch.shutdown()


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(heartbeat_ms=100) as orch:
        yield orch


@pytest.fixture
async def agents(orch: Orchestrator) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await agents(name=..., ...)`` connects a RawAgent that is in the read model."""
    made: list[RawAgent] = []

    async def make(**fields: Any) -> RawAgent:
        agent = RawAgent(f"ws://127.0.0.1:{orch.port}/", **fields)
        await agent.connect()
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.close()
