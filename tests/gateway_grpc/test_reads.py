"""gRPC reads mirror the fleet's read model (CONTRACT §3, SPEC §11)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, failure
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub


async def test_get_stats_matches_the_fleet(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    empty = await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH)
    assert (empty.instances, empty.rooms, empty.connections) == (0, 0, 0)
    assert empty.state_hash == orch.fleet.stats.state_hash
    await agents(room_types=["match", "lobby"], rooms={"a": RawRoom("match", 3)})
    await agents(room_types=["duel"], rooms={"b": RawRoom("duel", 4), "c": RawRoom("duel", 1)})
    stats = await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH)
    assert (stats.instances, stats.rooms, stats.connections) == (2, 3, 8)
    assert list(stats.room_types) == ["duel", "lobby", "match"]
    assert stats.state_hash == orch.fleet.stats.state_hash != empty.state_hash


async def test_list_and_get_instance_carry_every_field(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    first = await agents(
        name="eu1",
        endpoint_url="wss://eu1.example",
        labels={"region": "eu"},
        room_types=["match"],
        rooms={"r2": RawRoom("match", 2), "r1": RawRoom("match", 5, "fleet")},
        max_connections=100,
    )
    second = await agents(name="us1", max_rooms=0, auto_create=False, status="draining")
    listed = await stub.ListInstances(pb.ListInstancesRequest(), metadata=AUTH)
    assert listed.count == 2 and listed.next_cursor == ""
    assert [i.id for i in listed.instances] == [first.instance_id, second.instance_id]

    eu1 = await stub.GetInstance(
        pb.GetInstanceRequest(instance_id=first.instance_id), metadata=AUTH
    )
    assert eu1 == listed.instances[0]
    info = orch.fleet.get_instance(first.instance_id)
    assert info is not None
    assert (eu1.name, eu1.process_uid, eu1.endpoint_url) == (
        "eu1",
        first.process_uid,
        info.endpoint_url,
    )
    assert dict(eu1.labels) == {"region": "eu"} and list(eu1.room_types) == ["match"]
    assert [(r.id, r.connections, r.local) for r in eu1.rooms] == [
        ("r1", 5, False),
        ("r2", 2, True),
    ]
    assert all(r.instance_id == first.instance_id for r in eu1.rooms)
    assert all(r.endpoint_url == "wss://eu1.example" for r in eu1.rooms)
    assert eu1.connections == 7
    assert eu1.capacity.HasField("max_connections") and eu1.capacity.max_connections == 100
    assert not eu1.capacity.HasField("max_rooms")
    assert eu1.auto_create is True and eu1.status == "active"
    assert eu1.last_sync_at == info.last_sync_at > 1_600_000_000_000
    assert eu1.agent_version == "1.0.0" and eu1.protocol_version == 3

    us1 = listed.instances[1]
    assert us1.capacity.HasField("max_rooms") and us1.capacity.max_rooms == 0
    assert not us1.capacity.HasField("max_connections")
    assert us1.auto_create is False and us1.status == "draining"


async def test_get_instance_unknown_is_not_found(stub: FleetControlAsyncStub) -> None:
    call = stub.GetInstance(pb.GetInstanceRequest(instance_id="i_nope"), metadata=AUTH)
    assert await failure(call) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")


async def test_list_instance_rooms_lists_one_instance(
    stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents(rooms={"b": RawRoom("match"), "a": RawRoom("match")})
    await agents(rooms={"c": RawRoom("match")})
    request = pb.ListInstanceRoomsRequest(instance_id=agent.instance_id)
    rooms = await stub.ListInstanceRooms(request, metadata=AUTH)
    assert [r.id for r in rooms.rooms] == ["a", "b"] and rooms.count == 2
    unknown = stub.ListInstanceRooms(pb.ListInstanceRoomsRequest(instance_id="i_x"), metadata=AUTH)
    assert await failure(unknown) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")


async def test_list_rooms_filters_by_type_instance_and_labels(
    stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    eu = await agents(
        labels={"region": "eu", "tier": "gold"},
        room_types=["match", "lobby"],
        rooms={"m1": RawRoom("match"), "l1": RawRoom("lobby")},
    )
    us = await agents(labels={"region": "us"}, rooms={"m2": RawRoom("match")})

    async def ids(**fields: object) -> list[str]:
        response = await stub.ListRooms(pb.ListRoomsRequest(**fields), metadata=AUTH)  # type: ignore[arg-type]
        assert response.count == len(response.rooms)
        return [room.id for room in response.rooms]

    assert await ids() == ["l1", "m1", "m2"]
    assert await ids(type="match") == ["m1", "m2"]
    assert await ids(type="") == []  # set means exact, even when empty
    assert await ids(instance_id=us.instance_id) == ["m2"]
    assert await ids(instance_id=eu.instance_id, type="lobby") == ["l1"]
    assert await ids(labels={"region": "eu"}) == ["l1", "m1"]
    assert await ids(labels={"region": "eu", "tier": "silver"}) == []
    assert await ids(labels={"region": "us"}, type="lobby") == []
    bad = stub.ListRooms(pb.ListRoomsRequest(labels={"": "x"}), metadata=AUTH)
    assert await failure(bad) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION")


async def test_get_room_by_public_id(stub: FleetControlAsyncStub, agents: RawAgents) -> None:
    agent = await agents(endpoint_url="wss://x.example", rooms={"r1": RawRoom("match", 9)})
    room = await stub.GetRoom(pb.GetRoomRequest(room_id="r1"), metadata=AUTH)
    assert room == pb.RoomInfo(
        metadata="{}",
        id="r1",
        type="match",
        connections=9,
        instance_id=agent.instance_id,
        endpoint_url="wss://x.example",
        local=True,
    )
    missing = stub.GetRoom(pb.GetRoomRequest(room_id="nope"), metadata=AUTH)
    assert await failure(missing) == (grpc.StatusCode.NOT_FOUND, "ROOM_NOT_FOUND")


async def test_instances_page_in_join_order_without_repeats(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    made = [await agents(name=f"n{i}") for i in range(5)]
    first = await stub.ListInstances(pb.ListInstancesRequest(limit=2), metadata=AUTH)
    assert [i.name for i in first.instances] == ["n0", "n1"]
    assert first.count == 5 and first.next_cursor
    # The last row of the page leaves: the next page still starts right after it.
    await made[1].close()
    await wait_for(lambda: orch.fleet.stats.instances == 4)
    second = await stub.ListInstances(
        pb.ListInstancesRequest(limit=2, cursor=first.next_cursor), metadata=AUTH
    )
    assert [i.name for i in second.instances] == ["n2", "n3"]
    assert second.count == 4 and second.next_cursor
    third = await stub.ListInstances(
        pb.ListInstancesRequest(limit=2, cursor=second.next_cursor), metadata=AUTH
    )
    assert [i.name for i in third.instances] == ["n4"] and third.next_cursor == ""


async def test_rooms_page_across_instances(stub: FleetControlAsyncStub, agents: RawAgents) -> None:
    await agents(rooms={"b": RawRoom("match"), "a": RawRoom("match")})
    await agents(
        rooms={"c": RawRoom("match"), "d": RawRoom("lobby")}, room_types=["match", "lobby"]
    )
    seen: list[str] = []
    cursor = ""
    while True:
        response = await stub.ListRooms(pb.ListRoomsRequest(limit=3, cursor=cursor), metadata=AUTH)
        assert response.count == 4
        seen.extend(room.id for room in response.rooms)
        cursor = response.next_cursor
        if not cursor:
            break
    assert seen == ["a", "b", "c", "d"]
    matches = await stub.ListRooms(pb.ListRoomsRequest(type="match", limit=1), metadata=AUTH)
    assert [r.id for r in matches.rooms] == ["a"] and matches.count == 3


@pytest.mark.parametrize(
    ("limit", "cursor"),
    [(10_001, ""), (0, "anything"), (5, "not a cursor!"), (5, "bm90IGpzb24"), (5, "WzEsMl0")],
    ids=["limit-too-big", "cursor-without-limit", "bad-base64", "not-json", "wrong-shape"],
)
async def test_bad_paging_is_invalid_argument(
    stub: FleetControlAsyncStub, agents: RawAgents, limit: int, cursor: str
) -> None:
    agent = await agents()
    calls: list[Awaitable[Any]] = [
        stub.ListInstances(pb.ListInstancesRequest(limit=limit, cursor=cursor), metadata=AUTH),
        stub.ListRooms(pb.ListRoomsRequest(limit=limit, cursor=cursor), metadata=AUTH),
        stub.ListInstanceRooms(
            pb.ListInstanceRoomsRequest(instance_id=agent.instance_id, limit=limit, cursor=cursor),
            metadata=AUTH,
        ),
    ]
    for call in calls:
        assert await failure(call) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION")
