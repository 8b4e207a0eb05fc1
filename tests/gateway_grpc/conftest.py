"""A real orchestrator with gRPC on an ephemeral port and stubs over real channels (raw
agents: the ``agents`` fixture of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from rivalis.fleet.v1 import control_pb2_grpc

from fleet_server import Orchestrator
from tests.support.clients import grpc_channel
from tests.support.orchestrators import running_orchestrator


@pytest.fixture
def orch_options() -> dict[str, Any]:
    """Extra ``Orchestrator`` options; override with ``@pytest.mark.parametrize``."""
    return {}


@pytest.fixture
async def orch(orch_options: dict[str, Any]) -> AsyncIterator[Orchestrator]:
    options: dict[str, Any] = {"api": True, "grpc_port": 0, "heartbeat_ms": 100}
    options.update(orch_options)
    async with running_orchestrator(**options) as orch:
        yield orch


@pytest.fixture
async def channel(orch: Orchestrator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc_channel(orch.grpc_port) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> control_pb2_grpc.FleetControlAsyncStub:
    return control_pb2_grpc.FleetControlStub(channel)
