"""Matchmaking over REST, SSE and gRPC (CONTRACT §11): create options, room metadata and
capacity in reads and filters, room:update, seat reservations, selectors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_agent._tickets import read_ticket, ticket_key
from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, Http, control_stub, grpc_cause
from tests.support.keys import KEY
from tests.support.orchestrators import running_orchestrator
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for


def _room(connections: int = 0, seats: int | None = 10, **extra: Any) -> RawRoom:
    return RawRoom("match", connections, origin="fleet", max_connections=seats, **extra)


@contextlib.asynccontextmanager
async def api() -> AsyncIterator[tuple[Orchestrator, RawAgents, Http]]:
    async with (
        running_orchestrator(api=True, grpc_port=0, heartbeat_ms=100) as orch,
        RawAgents(orch) as agents,
        aiohttp.ClientSession() as session,
    ):
        yield orch, agents, Http(session, orch.port)


async def _seed(agents: RawAgents) -> RawAgent:
    return await agents.join(
        labels={"region": "eu"},
        rooms={
            "ranked": _room(6, metadata='{"mode":"ranked","teams":2}'),
            "casual": _room(2, metadata='{"mode":"casual"}'),
            "closed": _room(0, locked=True),
            "open": _room(1, seats=None),
        },
    )


async def test_rooms_show_and_filter_by_metadata_free_seats_and_lock() -> None:
    async with api() as (_, agents, http):
        await _seed(agents)
        reply = await http.get("/v1/rooms/ranked")
        assert reply.data["metadata"] == {"mode": "ranked", "teams": 2}
        assert (reply.data["maxConnections"], reply.data["locked"]) == (10, False)
        assert reply.data["reservedSeats"] == 0

        async def ids(query: str) -> list[str]:
            got = await http.get(f"/v1/rooms?{query}")
            assert got.status == 200, got.body
            return sorted(row["id"] for row in got.data)

        assert await ids("metadata=mode:ranked") == ["ranked"]
        assert await ids("metadata=teams:2") == ["ranked"]
        assert await ids("metadata=mode:ranked&metadata=teams:3") == []
        assert await ids("minFreeSeats=5") == ["casual", "closed", "open"]
        assert await ids("locked=true") == ["closed"]
        assert await ids("locked=false&minFreeSeats=9") == ["open"]
        for bad in ("minFreeSeats=-1", "minFreeSeats=x", "locked=yes", "metadata=nokey"):
            refused = await http.get(f"/v1/rooms?{bad}")
            assert (refused.status, refused.cause) == (400, "VALIDATION"), bad


async def test_create_options_reach_the_game_server_and_bad_ones_send_nothing() -> None:
    async with api() as (_, agents, http):
        agent = await _seed(agents)
        reply = await http.post(
            "/v1/rooms", json={"type": "match", "options": {"map": "dust", "teams": 2}}
        )
        assert reply.status == 201, reply.body
        assert agent.commands[-1].options == '{"map":"dust","teams":2}'
        sent = len(agent.commands)
        for options in ([1], "x", {"big": "y" * 5000}):
            bad = await http.post("/v1/rooms", json={"type": "match", "options": options})
            assert (bad.status, bad.cause) == (400, "VALIDATION"), options
        assert len(agent.commands) == sent


async def test_seats_over_rest_reserve_create_and_release() -> None:
    async with api() as (orch, agents, http):
        agent = await _seed(agents)
        reply = await http.post("/v1/seats", json={"type": "match", "seats": 3})
        assert reply.status == 200, reply.body
        grant = reply.data
        assert grant["room"]["id"] == "ranked" and grant["created"] is False  # fullest that fits
        assert grant["room"]["reservedSeats"] == 3
        claims = read_ticket(ticket_key(KEY), grant["reservation"]["ticket"])
        assert (claims.id, claims.room, claims.seats) == (grant["reservation"]["id"], "ranked", 3)

        reply = await http.post(
            "/v1/seats",
            json={
                "type": "match",
                "seats": 2,
                "metadata": {"mode": "ranked"},
                "create": {"options": {"mode": "ranked"}},
            },
        )
        assert reply.status == 201, reply.body  # ranked has 1 seat left: a new room
        assert reply.data["created"] is True
        assert agent.commands[-1].options == '{"mode":"ranked"}'

        missing = await http.post("/v1/seats", json={"type": "match", "metadata": {"mode": "x"}})
        assert (missing.status, missing.cause) == (409, "NO_CANDIDATE")
        released = await http.delete(f"/v1/seats/{grant['reservation']['id']}")
        assert released.status == 200
        assert orch.fleet.get_room("ranked").reserved_seats == 0  # type: ignore[union-attr]
        again = await http.delete(f"/v1/seats/{grant['reservation']['id']}")
        assert (again.status, again.cause) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"type": "match", "seats": 0},
        {"type": "match", "seats": 1001},
        {"type": "match", "seats": "2"},
        {"type": "match", "ttlMs": 500},
        {"type": "match", "metadata": [1]},
        {"type": "match", "create": {"options": "x"}},
        {"type": "match", "unknown": 1},
        {"seats": 1},
        {
            "type": "match",
            "placement": {"selectors": [{"expressions": [{"key": "r", "op": "Near"}]}]},
        },
        {
            "type": "match",
            "placement": {"selectors": [{"expressions": [{"key": "r", "op": "In"}]}]},
        },
        {"type": "match", "placement": {"labels": {"a": "b"}, "selectors": [{}]}},
    ],
)
async def test_bad_seat_requests_are_400_and_reserve_nothing(body: dict[str, Any]) -> None:
    async with api() as (orch, agents, http):
        await _seed(agents)
        before = orch.fleet.state_hash
        reply = await http.post("/v1/seats", json=body)
        assert (reply.status, reply.cause) == (400, "VALIDATION"), reply.body
        assert orch.fleet.state_hash == before


async def test_selectors_are_tried_in_order_over_rest() -> None:
    async with api() as (_, agents, http):
        await agents.join(name="eu", labels={"region": "eu"}, rooms={"e": _room(1)})
        await agents.join(name="us", labels={"region": "us"}, rooms={"u": _room(5)})
        placement = {
            "selectors": [
                {"labels": {"region": "ap"}},
                {"expressions": [{"key": "region", "op": "NotIn", "values": ["us"]}]},
            ]
        }
        reply = await http.post("/v1/seats", json={"type": "match", "placement": placement})
        assert reply.data["room"]["id"] == "e"
        created = await http.post("/v1/rooms", json={"type": "match", "placement": placement})
        assert created.status == 201 and created.data["id"] not in ("e", "u")


async def test_room_update_is_streamed_when_metadata_lock_or_maximum_change() -> None:
    async with api() as (_, agents, http):
        agent = await _seed(agents)
        async with http.session.get(http.url("/v1/events"), headers=http.auth()) as stream:
            assert stream.status == 200
            agent.rooms["casual"].metadata = '{"mode":"casual","round":2}'
            agent.rooms["closed"].locked = False
            seen: list[dict[str, Any]] = []

            async def read() -> None:
                async for line in stream.content:
                    if line.startswith(b"event: room:update"):
                        data = await stream.content.readline()
                        seen.append(json.loads(data.removeprefix(b"data: ")))
                        if len(seen) == 2:
                            return

            await asyncio.wait_for(read(), 5)
        by_id = {room["id"]: room for room in seen}
        assert by_id["casual"]["metadata"] == {"mode": "casual", "round": 2}
        assert by_id["closed"]["locked"] is False


async def test_grpc_reserve_release_list_filters_and_create_options() -> None:
    async with api() as (orch, agents, _), control_stub(orch.grpc_port) as stub:
        agent = await _seed(agents)
        grant = await stub.ReserveSeats(
            pb.ReserveSeatsRequest(type="match", seats=2, metadata='{"mode":"casual"}'),
            metadata=AUTH,
        )
        assert grant.room.id == "casual" and grant.room.reserved_seats == 2
        assert json.loads(grant.room.metadata) == {"mode": "casual"}
        assert grant.room.max_connections == 10 and not grant.created
        await stub.ReleaseSeats(
            pb.ReleaseSeatsRequest(reservation_id=grant.reservation.id), metadata=AUTH
        )
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.ReleaseSeats(
                pb.ReleaseSeatsRequest(reservation_id=grant.reservation.id), metadata=AUTH
            )
        assert (gone.value.code(), grpc_cause(gone.value)) == (
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        )
        listed = await stub.ListRooms(
            pb.ListRoomsRequest(metadata={"mode": "ranked"}, min_free_seats=1, locked=False),
            metadata=AUTH,
        )
        assert [room.id for room in listed.rooms] == ["ranked"]
        selector = pb.Selector(
            expressions=[pb.SelectorExpression(key="region", op="In", values=["eu"])]
        )
        await stub.CreateRoom(
            pb.CreateRoomRequest(
                type="match",
                options='{"map":"dust"}',
                placement=pb.Placement(selectors=[selector]),
            ),
            metadata=AUTH,
        )
        await wait_for(lambda: agent.commands[-1].options == '{"map":"dust"}')
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.ReserveSeats(pb.ReserveSeatsRequest(type="match", seats=5000), metadata=AUTH)
        assert grpc_cause(bad.value) == "VALIDATION"
        with pytest.raises(grpc.aio.AioRpcError) as none:
            await stub.ReserveSeats(
                pb.ReserveSeatsRequest(type="match", metadata='{"mode":"x"}'), metadata=AUTH
            )
        assert grpc_cause(none.value) == "NO_CANDIDATE"
