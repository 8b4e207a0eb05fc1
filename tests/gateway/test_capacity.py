"""The capacity signal (CONTRACT §14) over REST, gRPC and the Python API, against agents
with known capacities: grouped by a label, draining and stale instances, unlimited ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server import Orchestrator, Placement
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, Http, control_stub
from tests.support.orchestrators import running_orchestrator
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

ROOM = RawRoom("match", 5, origin="fleet", max_connections=10)


@contextlib.asynccontextmanager
async def fleet() -> AsyncIterator[tuple[Orchestrator, RawAgents, Http]]:
    async with (
        running_orchestrator(api=True, grpc_port=0, heartbeat_ms=100) as orch,
        RawAgents(orch) as agents,
        aiohttp.ClientSession() as session,
    ):
        eu = {"region": "eu"}
        await agents.join(
            name="eu1", labels=eu, max_rooms=4, max_connections=100, rooms={"a": ROOM}
        )
        await agents.join(name="eu2", labels=eu, max_rooms=2, max_connections=50, status="draining")
        await agents.join(
            name="us1", labels={"region": "us"}, max_rooms=3, max_connections=30, rooms={"b": ROOM}
        )
        await agents.join(name="bare", room_types=["lobby"])  # no region, unlimited
        yield orch, agents, Http(session, orch.port)


def _by_region(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {row["labels"]["region"]: row for row in rows}


async def test_capacity_grouped_by_region_counts_only_active_instances_as_free() -> None:
    async with fleet() as (orch, _, http):
        await orch.fleet.reserve_seats("match", 2, placement=Placement(labels={"region": "eu"}))
        reply = await http.get("/v1/capacity?groupBy=region")
        assert reply.status == 200 and reply.json["count"] == 3
        rows = _by_region(reply.data)
        assert rows["eu"] == {
            "labels": {"region": "eu"},
            "instances": 2,
            "active": 1,
            "draining": 1,
            "stale": 0,
            "rooms": 1,
            "maxRooms": 6,
            "freeRoomSlots": 3,  # eu1 only: 4 − 1; the draining eu2 adds none
            "connections": 5,
            "freeConnections": 95,
            "reservedSeats": 2,
        }
        assert rows["us"]["freeRoomSlots"] == 2 and rows["us"]["freeConnections"] == 25
        assert rows[None]["labels"] == {"region": None}
        assert rows[None]["maxRooms"] is None and rows[None]["freeRoomSlots"] is None
        assert rows[None]["freeConnections"] is None


async def test_capacity_of_the_whole_fleet_by_room_type_and_rooms_being_created() -> None:
    async with fleet() as (orch, agents, http):
        whole = (await http.get("/v1/capacity")).data
        assert len(whole) == 1 and whole[0]["labels"] == {} and whole[0]["instances"] == 4
        assert whole[0]["freeRoomSlots"] is None  # an active instance is unlimited
        matches = (await http.get("/v1/capacity?type=match")).data
        assert matches[0]["instances"] == 3 and matches[0]["freeRoomSlots"] == 5
        # A create in flight takes a slot at once.
        us1 = next(a for a in agents.agents if a.name == "us1")
        us1.auto_ack = False
        pending = orch.fleet.create_room("match", placement=Placement(instance_id=us1.instance_id))
        task = asyncio.ensure_future(pending)
        await wait_for(lambda: len(us1.commands) == 1)
        rows = _by_region((await http.get("/v1/capacity?groupBy=region&type=match")).data)
        assert rows["us"]["freeRoomSlots"] == 1 and rows["us"]["rooms"] == 1
        task.cancel()


async def test_stale_instances_are_counted_apart_and_add_nothing_free() -> None:
    async with fleet() as (orch, agents, _):
        eu1 = next(a for a in agents.agents if a.name == "eu1")
        eu1.auto_reply = False
        await wait_for(lambda: orch.fleet._read.instance(eu1.instance_id).stale, 5)  # type: ignore[union-attr]
        rows = _by_region([row.to_dict() for row in orch.fleet.capacity("region")])
        assert (rows["eu"]["active"], rows["eu"]["stale"], rows["eu"]["draining"]) == (0, 1, 1)
        assert rows["eu"]["freeRoomSlots"] == 0 and rows["eu"]["freeConnections"] == 0


async def test_capacity_over_grpc_matches_rest() -> None:
    async with fleet() as (orch, _, http), control_stub(orch.grpc_port) as stub:
        answer = await stub.GetCapacity(pb.GetCapacityRequest(group_by="region"), metadata=AUTH)
        groups = {g.labels.get("region"): g for g in answer.groups}
        assert groups["eu"].free_room_slots == 3 and groups["eu"].draining == 1
        assert groups[None].label_missing and not groups[None].HasField("free_room_slots")
        rest = _by_region((await http.get("/v1/capacity?groupBy=region")).data)
        assert groups["us"].free_connections == rest["us"]["freeConnections"]
