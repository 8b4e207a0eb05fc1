"""Every call of ``fleet_client`` against a live orchestrator, over REST and gRPC alike."""

from __future__ import annotations

import dataclasses

import pytest

import fleet_client
import fleet_server
from fleet_client import (
    FleetClient,
    InvalidRequest,
    NoCandidate,
    NotFound,
    RoomExists,
    Unauthorized,
)
from fleet_server import Orchestrator
from fleet_server._capacity import CapacityRow as ServerCapacityRow
from fleet_server._seat_service import SeatGrant as ServerSeatGrant
from fleet_server._seat_service import SeatReservation as ServerSeatReservation
from tests.support.agents import RawAgents
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .conftest import client_for


async def test_reads_match_the_orchestrator(orch: Orchestrator, transport: str) -> None:
    async with RawAgents(orch) as agents:
        await agents.join(
            name="eu1", labels={"region": "eu"}, rooms={"r1": RawRoom("match", 3)}, max_rooms=5
        )
        await agents.join(name="us1", labels={"region": "us"}, rooms={"r2": RawRoom("lobby", 1)})
        async with client_for([orch], transport) as fleet:
            stats = await fleet.stats()
            assert dataclasses.astuple(stats) == dataclasses.astuple(orch.fleet.stats)
            instances = await fleet.instances()
            assert [i.name for i in instances] == ["eu1", "us1"]
            assert instances[0].capacity.max_rooms == 5 and instances[0].rooms[0].id == "r1"
            assert {r.id for r in await fleet.rooms()} == {"r1", "r2"}
            assert [r.id for r in await fleet.rooms(type="lobby")] == ["r2"]
            assert [r.id for r in await fleet.rooms(labels={"region": "eu"})] == ["r1"]
            room = await fleet.get_room("r1")
            assert (room.type, room.connections, room.instance_id) == (
                "match",
                3,
                instances[0].id,
            )
            rows = await fleet.capacity("region")
            assert sorted(row.labels["region"] or "" for row in rows) == ["eu", "us"]
            cluster = await fleet.cluster()
            assert cluster.role == "single" and cluster.settled


async def test_control_calls_and_seats(orch: Orchestrator, transport: str) -> None:
    async with RawAgents(orch) as agents:
        agent = await agents.join(max_connections=100)
        async with client_for([orch], transport) as fleet:
            room = await fleet.create_room("match", options={"map": "dust"})
            assert room.id.startswith("c") and room.instance_id == agent.instance_id
            assert agent.commands[-1].options == '{"map":"dust"}'
            named = await fleet.create_room("match", room_id="named-1")
            assert named.id == "named-1"
            with pytest.raises(RoomExists) as taken:
                await fleet.create_room("match", room_id="named-1")
            assert taken.value.code == "ROOM_EXISTS" and not taken.value.retryable
            await fleet.destroy_room("named-1")
            assert orch.fleet.get_room("named-1") is None
            await fleet.drain(agent.instance_id)
            await wait_for(
                lambda: (
                    (i := orch.fleet.get_instance(agent.instance_id)) is not None
                    and i.status == "draining"
                )
            )
            with pytest.raises(NoCandidate):
                await fleet.create_room("match")
            await fleet.undrain(agent.instance_id)
            await wait_for(
                lambda: (
                    (i := orch.fleet.get_instance(agent.instance_id)) is not None
                    and i.status == "active"
                )
            )
            grant = await fleet.reserve_seats("match", 2, create={"options": {}})
            assert grant.reservation.seats == 2 and grant.reservation.ticket
            await fleet.release_seats(grant.reservation.id)


async def test_errors_are_typed_and_not_retried(orch: Orchestrator, transport: str) -> None:
    async with client_for([orch], transport) as fleet:
        with pytest.raises(NotFound) as missing:
            await fleet.get_room("nope")
        assert missing.value.code == "ROOM_NOT_FOUND"
        with pytest.raises(InvalidRequest):
            await fleet.create_room("match", room_id="bad id!")
    async with client_for([orch], transport, key="wrong-key-0123456789abcdef") as fleet:
        with pytest.raises(Unauthorized):
            await fleet.stats()


def test_models_mirror_the_orchestrators() -> None:
    """The client's dataclasses have the orchestrator's fields, in the same order."""
    pairs = [
        (fleet_client.RoomInfo, fleet_server.RoomInfo),
        (fleet_client.InstanceInfo, fleet_server.InstanceInfo),
        (fleet_client.FleetStats, fleet_server.FleetStats),
        (fleet_client.SeatReservation, ServerSeatReservation),
        (fleet_client.SeatGrant, ServerSeatGrant),
        (fleet_client.CapacityRow, ServerCapacityRow),
    ]
    for mine, theirs in pairs:
        assert [(f.name, str(f.type)) for f in dataclasses.fields(mine)] == [
            (f.name, str(f.type)) for f in dataclasses.fields(theirs)
        ], mine.__name__


def test_the_client_imports_no_server_module() -> None:
    import ast
    from pathlib import Path

    root = Path(fleet_client.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in {"fleet_server", "gateway"}, (path.name, name)


def test_a_client_needs_a_url_and_a_known_transport() -> None:
    with pytest.raises(ValueError):
        FleetClient([], token_or_key="k")
    with pytest.raises(ValueError):
        FleetClient(["http://x"], token_or_key="k", transport="smoke")  # type: ignore[arg-type]
