"""Both transports of ``fleet_client`` run every test of this package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleet_client import FleetClient
from fleet_server import Orchestrator
from tests.support.keys import ADMIN
from tests.support.orchestrators import running_orchestrator


@pytest.fixture(params=["http", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def url_of(orch: Orchestrator, transport: str) -> str:
    """Where a client of ``transport`` reaches ``orch``."""
    if transport == "grpc":
        return f"127.0.0.1:{orch.grpc_port}"
    return f"http://127.0.0.1:{orch.port}"


def client_for(
    orchs: list[Orchestrator], transport: str, key: str = ADMIN, **options: Any
) -> FleetClient:
    options.setdefault("deadline_s", 20.0)
    return FleetClient(
        [url_of(orch, transport) for orch in orchs],
        token_or_key=key,
        transport="grpc" if transport == "grpc" else "http",
        **options,
    )


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(api=True, grpc_port=0, heartbeat_ms=60) as orch:
        yield orch
