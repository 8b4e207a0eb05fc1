"""Fixtures every test package can use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleet_server import Orchestrator
from tests.support.agents import RawAgents


@pytest.fixture
async def agents(orch: Orchestrator) -> AsyncIterator[RawAgents]:
    """Factory: ``await agents(name=..., ...)`` connects a RawAgent to the package's ``orch``
    fixture and waits until it is in the read model; every one is closed at teardown."""
    async with RawAgents(orch) as factory:
        yield factory
