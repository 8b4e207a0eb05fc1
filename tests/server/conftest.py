from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleet_server import Orchestrator
from tests.support.orchestrators import running_orchestrator


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(heartbeat_ms=100) as orch:
        yield orch
