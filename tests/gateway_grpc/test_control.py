"""gRPC control calls and every failure they can end with (CONTRACT §3, §5)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb
from rivalis.fleet.v3 import agent_pb2

from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, failure
from tests.support.raw_agent import RawAgent
from tests.support.waits import wait_for

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub


async def test_create_room_answers_the_room_readable_everywhere(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents(endpoint_url="wss://eu1.example")
    room = await stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="m-42"), metadata=AUTH)
    assert room == pb.RoomInfo(
        metadata="{}",
        id="m-42",
        type="match",
        connections=0,
        instance_id=agent.instance_id,
        endpoint_url="wss://eu1.example",
        local=False,
    )
    assert orch.fleet.get_room("m-42") is not None
    assert await stub.GetRoom(pb.GetRoomRequest(room_id="m-42"), metadata=AUTH) == room
    assert [(c.op, c.room_id, c.room_type) for c in agent.commands] == [("create", "m-42", "match")]


async def test_create_room_without_id_generates_one(
    stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    await agents()
    room = await stub.CreateRoom(pb.CreateRoomRequest(type="match"), metadata=AUTH)
    assert room.id.startswith("r_") and len(room.id) == 23


async def test_create_room_placement_pins_and_labels(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    eu = await agents(name="eu", labels={"region": "eu"})
    us = await agents(name="us", labels={"region": "us"})
    by_label = pb.Placement(labels={"region": "us"}, strategy="most-loaded")
    room = await stub.CreateRoom(
        pb.CreateRoomRequest(type="match", placement=by_label), metadata=AUTH
    )
    assert room.instance_id == us.instance_id
    by_uid = pb.Placement(process_uid=eu.process_uid)
    room = await stub.CreateRoom(
        pb.CreateRoomRequest(type="match", placement=by_uid), metadata=AUTH
    )
    assert room.instance_id == eu.instance_id
    eu.status = "draining"
    await wait_for(lambda: orch.fleet.instances[0].status == "draining")
    pinned = pb.Placement(instance_id=eu.instance_id)
    draining = stub.CreateRoom(pb.CreateRoomRequest(type="match", placement=pinned), metadata=AUTH)
    assert await failure(draining) == (grpc.StatusCode.FAILED_PRECONDITION, "INSTANCE_DRAINING")
    forced = pb.Placement(instance_id=eu.instance_id, force=True)
    room = await stub.CreateRoom(
        pb.CreateRoomRequest(type="match", placement=forced), metadata=AUTH
    )
    assert room.instance_id == eu.instance_id


@pytest.mark.parametrize(
    "request_",
    [
        pb.CreateRoomRequest(type=""),
        pb.CreateRoomRequest(type="match", room_id=""),
        pb.CreateRoomRequest(type="match", room_id="has space"),
        pb.CreateRoomRequest(type="match", room_id="x" * 65),
        pb.CreateRoomRequest(type="match", placement=pb.Placement(strategy="")),
        pb.CreateRoomRequest(type="match", placement=pb.Placement(strategy="fastest")),
        pb.CreateRoomRequest(type="match", placement=pb.Placement(instance_id="")),
        pb.CreateRoomRequest(type="match", placement=pb.Placement(process_uid="")),
        pb.CreateRoomRequest(
            type="match", placement=pb.Placement(instance_id="i_a", process_uid="p_b")
        ),
    ],
    ids=[
        "empty-type",
        "empty-room-id",
        "bad-room-id",
        "long-room-id",
        "empty-strategy",
        "unknown-strategy",
        "empty-instance-pin",
        "empty-process-pin",
        "both-pins",
    ],
)
async def test_create_room_rejects_invalid_requests(
    stub: FleetControlAsyncStub, agents: RawAgents, request_: pb.CreateRoomRequest
) -> None:
    agent = await agents()
    assert await failure(stub.CreateRoom(request_, metadata=AUTH)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION",
    )
    assert agent.commands == []


async def test_create_room_placement_failures(
    stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    await agents(room_types=["match"])
    cases = [
        (
            pb.CreateRoomRequest(type="match", placement=pb.Placement(instance_id="i_gone")),
            (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND"),
        ),
        (
            pb.CreateRoomRequest(type="match", placement=pb.Placement(process_uid="p_gone")),
            (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND"),
        ),
        (
            pb.CreateRoomRequest(type="chess"),
            (grpc.StatusCode.FAILED_PRECONDITION, "NO_CANDIDATE"),
        ),
        (
            pb.CreateRoomRequest(type="match", placement=pb.Placement(labels={"region": "mars"})),
            (grpc.StatusCode.FAILED_PRECONDITION, "NO_CANDIDATE"),
        ),
    ]
    for request, expected in cases:
        assert await failure(stub.CreateRoom(request, metadata=AUTH)) == expected


async def test_create_room_with_a_taken_id_is_already_exists(
    stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    await agents()
    await stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="dup"), metadata=AUTH)
    again = stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="dup"), metadata=AUTH)
    assert await failure(again) == (grpc.StatusCode.ALREADY_EXISTS, "ROOM_EXISTS")


async def test_create_room_the_agent_already_has_is_already_exists(
    stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()

    async def exists(cmd: agent_pb2.Command) -> agent_pb2.Ack:
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, exists=True)

    agent.on_command = exists
    call = stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="hidden"), metadata=AUTH)
    assert await failure(call) == (grpc.StatusCode.ALREADY_EXISTS, "ROOM_EXISTS")


async def test_destroy_room_removes_it_from_every_read(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()
    await stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="gone"), metadata=AUTH)
    assert await stub.DestroyRoom(pb.DestroyRoomRequest(room_id="gone"), metadata=AUTH) == (
        pb.DestroyRoomResponse()
    )
    assert orch.fleet.get_room("gone") is None
    assert [c.op for c in agent.commands] == ["create", "destroy"]
    again = stub.DestroyRoom(pb.DestroyRoomRequest(room_id="gone"), metadata=AUTH)
    assert await failure(again) == (grpc.StatusCode.NOT_FOUND, "ROOM_NOT_FOUND")


async def test_drain_and_undrain_reach_the_agent(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()
    request = pb.DrainInstanceRequest(instance_id=agent.instance_id)
    assert await stub.DrainInstance(request, metadata=AUTH) == pb.DrainInstanceResponse()
    assert agent.status == "draining"
    await wait_for(lambda: orch.fleet.instances[0].status == "draining")
    blocked = stub.CreateRoom(pb.CreateRoomRequest(type="match"), metadata=AUTH)
    assert await failure(blocked) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_CANDIDATE")
    undrain = pb.UndrainInstanceRequest(instance_id=agent.instance_id)
    assert await stub.UndrainInstance(undrain, metadata=AUTH) == pb.UndrainInstanceResponse()
    assert agent.status == "active"
    assert [c.op for c in agent.commands] == ["drain", "undrain"]


async def test_drain_and_undrain_unknown_instance_are_not_found(
    stub: FleetControlAsyncStub,
) -> None:
    drain = stub.DrainInstance(pb.DrainInstanceRequest(instance_id="i_x"), metadata=AUTH)
    assert await failure(drain) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")
    undrain = stub.UndrainInstance(pb.UndrainInstanceRequest(instance_id="i_x"), metadata=AUTH)
    assert await failure(undrain) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")


# --- command failures, for each of the four commands ----------------------------------

Command = Callable[["FleetControlAsyncStub", RawAgent], Awaitable[Any]]


def _create(stub: FleetControlAsyncStub, agent: RawAgent) -> Awaitable[Any]:
    pin = pb.Placement(instance_id=agent.instance_id, force=True)
    return stub.CreateRoom(pb.CreateRoomRequest(type="match", placement=pin), metadata=AUTH)


def _destroy(stub: FleetControlAsyncStub, agent: RawAgent) -> Awaitable[Any]:
    return stub.DestroyRoom(pb.DestroyRoomRequest(room_id="existing"), metadata=AUTH)


def _drain(stub: FleetControlAsyncStub, agent: RawAgent) -> Awaitable[Any]:
    request = pb.DrainInstanceRequest(instance_id=agent.instance_id)
    return stub.DrainInstance(request, metadata=AUTH)


def _undrain(stub: FleetControlAsyncStub, agent: RawAgent) -> Awaitable[Any]:
    request = pb.UndrainInstanceRequest(instance_id=agent.instance_id)
    return stub.UndrainInstance(request, metadata=AUTH)


COMMANDS = pytest.mark.parametrize(
    "command", [_create, _destroy, _drain, _undrain], ids=["create", "destroy", "drain", "undrain"]
)


async def _agent_with_a_room(orch: Orchestrator, agents: RawAgents) -> RawAgent:
    agent = await agents()
    await orch.fleet.create_room("match", room_id="existing")
    return agent


@COMMANDS
async def test_a_refused_command_is_aborted(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents, command: Command
) -> None:
    agent = await _agent_with_a_room(orch, agents)

    async def refuse(cmd: agent_pb2.Command) -> agent_pb2.Ack:
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, error="disk full")

    agent.on_command = refuse
    assert await failure(command(stub, agent)) == (grpc.StatusCode.ABORTED, "COMMAND_FAILED")


@COMMANDS
@pytest.mark.parametrize("orch_options", [{"command_timeout_ms": 300}])
async def test_an_unanswered_command_is_deadline_exceeded(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents, command: Command
) -> None:
    agent = await _agent_with_a_room(orch, agents)
    agent.auto_ack = False
    assert await failure(command(stub, agent)) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "COMMAND_TIMEOUT",
    )


@COMMANDS
async def test_a_command_to_an_agent_that_drops_is_unavailable(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents, command: Command
) -> None:
    agent = await _agent_with_a_room(orch, agents)
    agent.auto_ack = False
    sent = len(agent.commands)
    call = asyncio.ensure_future(command(stub, agent))
    await wait_for(lambda: len(agent.commands) > sent)
    await agent.close()
    assert await failure(call) == (grpc.StatusCode.UNAVAILABLE, "INSTANCE_DISCONNECTED")


@COMMANDS
async def test_a_command_beyond_the_in_flight_cap_is_resource_exhausted(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents, command: Command
) -> None:
    agent = await _agent_with_a_room(orch, agents)
    agent.auto_ack = False
    sent = len(agent.commands)
    backlog = [
        asyncio.ensure_future(orch.fleet.drain_instance(agent.instance_id)) for _ in range(32)
    ]
    await wait_for(lambda: len(agent.commands) == sent + 32)
    assert await failure(command(stub, agent)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "INSTANCE_BUSY",
    )
    await agent.close()
    await asyncio.gather(*backlog, return_exceptions=True)
