"""A real orchestrator with gRPC on an ephemeral port, stubs over real channels, raw agents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from rivalis.fleet.v1 import control_pb2_grpc

from fleet_server import Orchestrator
from tests.server.conftest import running_orchestrator
from tests.server.raw_agent import ADMIN, RawAgent, wait_for

AUTH = (("authorization", f"Bearer {ADMIN}"),)

MakeAgent = Callable[..., Awaitable[RawAgent]]


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
    async with grpc.aio.insecure_channel(f"127.0.0.1:{orch.grpc_port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> control_pb2_grpc.FleetControlAsyncStub:
    return control_pb2_grpc.FleetControlStub(channel)


@pytest.fixture
async def agents(orch: Orchestrator) -> AsyncIterator[MakeAgent]:
    """Factory: ``await agents(name=..., ...)`` connects a RawAgent that is in the read model."""
    made: list[RawAgent] = []

    async def make(**fields: Any) -> RawAgent:
        agent = RawAgent(f"ws://127.0.0.1:{orch.port}/", **fields)
        await agent.connect()
        made.append(agent)
        await wait_for(lambda: orch.fleet.get_instance(agent.instance_id) is not None)
        return agent

    yield make
    for agent in made:
        await agent.close()


def cause(error: grpc.aio.AioRpcError) -> str | None:
    """The ``fleet-cause`` trailing metadata of a failed call."""
    for key, value in error.trailing_metadata() or ():
        if key == "fleet-cause":
            return value if isinstance(value, str) else value.decode()
    return None


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str | None]:
    """Await a call that must fail; its status code and fleet cause."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), cause(error)
    raise AssertionError("the call succeeded")
