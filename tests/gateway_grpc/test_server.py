"""The gRPC port's lifecycle, health and reflection (CONTRACT §3, SPEC §9, §11)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server import Orchestrator
from tests.support.clients import AUTH, control_stub
from tests.support.orchestrators import new_orchestrator, running_orchestrator

SERVICE = "rivalis.fleet.v1.FleetControl"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_answers_serving_without_a_key(channel: grpc.aio.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack its methods
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == SERVING


async def test_health_turns_not_serving_when_shutdown_begins(
    orch: Orchestrator, channel: grpc.aio.Channel
) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types lack its methods
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    first = await watch.read()
    assert isinstance(first, health_pb2.HealthCheckResponse) and first.status == SERVING
    shutdown = asyncio.ensure_future(orch.shutdown())
    second = await watch.read()
    assert isinstance(second, health_pb2.HealthCheckResponse) and second.status == NOT_SERVING
    await shutdown


async def test_reflection_lists_and_describes_the_services(channel: grpc.aio.Channel) -> None:
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(cast(Any, channel))
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ]
    responses = [r async for r in reflection.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    control = next(f for f in files if f.package == "rivalis.fleet.v1")
    assert control.name == "rivalis/fleet/v1/control.proto"
    methods = [m.name for m in control.service[0].method]
    assert methods == [
        "GetStats",
        "ListInstances",
        "GetInstance",
        "ListInstanceRooms",
        "DrainInstance",
        "UndrainInstance",
        "ListRooms",
        "GetRoom",
        "CreateRoom",
        "DestroyRoom",
        "WatchEvents",
        "GetCluster",
        "ReserveSeats",
        "ReleaseSeats",
        "GetCapacity",
        "CreateAgentToken",
        "ListAgentTokens",
        "RevokeAgentToken",
    ]


async def test_grpc_port_zero_binds_an_ephemeral_port_and_is_part_of_ready() -> None:
    orch = new_orchestrator(api=True, grpc_port=0)
    assert orch.grpc_port == 0 and not orch.ready
    async with orch:
        assert orch.ready and orch.grpc_port not in (None, 0)
        async with control_stub(orch.grpc_port) as stub:
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH)
            assert stats.state_hash == orch.fleet.stats.state_hash
    assert not orch.ready


@pytest.mark.parametrize(
    "options", [{"api": True, "grpc_port": None}, {"api": False, "grpc_port": 0}]
)
async def test_no_grpc_without_the_api_and_a_port(options: dict[str, object]) -> None:
    async with running_orchestrator(**options) as orch:
        assert orch.grpc_port is None and orch.ready


async def test_a_grpc_port_in_use_fails_listen_and_frees_the_http_port(
    orch: Orchestrator,
) -> None:
    # Both servers would share the port silently if SO_REUSEPORT were on.
    assert orch.grpc_port is not None
    twin = new_orchestrator(grpc_port=orch.grpc_port)
    with pytest.raises(OSError, match="gRPC could not bind"):
        await twin.listen()
    assert not twin.ready
    # The twin's HTTP site was closed again: its port is free.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", twin.port))
    await twin.shutdown()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other = new_orchestrator(grpc_port=taken.getsockname()[1])
        with pytest.raises(OSError, match="gRPC could not bind"):
            await other.listen()
        await other.shutdown()


async def test_shutdown_twice_and_before_listen_is_harmless() -> None:
    idle = new_orchestrator(grpc_port=0)
    await idle.shutdown()
    async with running_orchestrator(api=True, grpc_port=0) as orch:
        port = orch.grpc_port
    await orch.shutdown()
    async with control_stub(port) as stub:
        try:
            await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH, timeout=2)
        except grpc.aio.AioRpcError as error:
            assert error.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        else:
            raise AssertionError("the gRPC port still answers after shutdown")
