"""API tokens on gRPC (CONTRACT §12): accepted where the admin key is; a ``read`` token
makes the read RPCs only (PERMISSION_DENIED + FORBIDDEN for the rest); bad tokens are
UNAUTHENTICATED. Tokens are minted over REST only."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server import Orchestrator
from fleet_server._tokens import encode_token, token_fingerprint, token_key
from tests.support.agents import RawAgents
from tests.support.clients import failure
from tests.support.keys import ADMIN

from .test_auth import CALLS, Metadata

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub

READS = {
    "GetStats",
    "ListInstances",
    "GetInstance",
    "ListInstanceRooms",
    "ListRooms",
    "GetRoom",
    "WatchEvents",
}
WRITES = set(CALLS) - READS


async def mint(orch: Orchestrator, scope: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{orch.port}/v1/tokens",
            json={"scope": scope},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as reply,
    ):
        assert reply.status == 201
        token: str = (await reply.json())["data"]["token"]
        return token


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def test_a_read_token_makes_read_calls_and_is_denied_every_write(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()
    read = bearer(await mint(orch, "read"))
    stats = await stub.GetStats(pb.GetStatsRequest(), metadata=read)
    assert stats.instances == 1
    await stub.GetInstance(pb.GetInstanceRequest(instance_id=agent.instance_id), metadata=read)
    await stub.ListRooms(pb.ListRoomsRequest(), metadata=read)
    await stub.GetCluster(pb.GetClusterRequest(), metadata=read)
    for method in sorted(WRITES):
        assert await failure(CALLS[method](stub, read)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "FORBIDDEN",
        ), method
    for call in (
        stub.ReserveSeats(pb.ReserveSeatsRequest(type="match"), metadata=read),
        stub.ReleaseSeats(pb.ReleaseSeatsRequest(reservation_id="s_1"), metadata=read),
    ):
        assert await failure(call) == (grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN")
    assert agent.commands == []


async def test_a_read_token_watches_events(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    call = stub.WatchEvents(pb.WatchEventsRequest(), metadata=bearer(await mint(orch, "read")))
    await call.initial_metadata()
    agent = await agents()
    async for event in call:
        if event.type == "instance:join":
            assert event.instance.id == agent.instance_id
            break
    call.cancel()


async def test_an_admin_token_changes_the_fleet(
    orch: Orchestrator,
    stub: FleetControlAsyncStub,
    agents: RawAgents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleet")
    agent = await agents()
    token = await mint(orch, "admin")
    room = await stub.CreateRoom(
        pb.CreateRoomRequest(type="match", room_id="g1"), metadata=bearer(token)
    )
    assert room.instance_id == agent.instance_id
    audits = [r.getMessage() for r in caplog.records if r.name == "fleet.audit"]
    fingerprint = token_fingerprint(token)
    assert f"audit route=GRPC CreateRoom key={fingerprint} ip=127.0.0.1 outcome=OK" in audits
    assert all(token not in r.getMessage() for r in caplog.records)


async def test_expired_and_forged_tokens_are_unauthenticated(
    stub: FleetControlAsyncStub,
) -> None:
    now = int(time.time() * 1000)
    for payload, key in (
        ({"v": 1, "scope": "admin", "exp": now - 1, "jti": "x"}, ADMIN),
        ({"v": 1, "scope": "admin", "exp": now + 60_000, "jti": "x"}, "another-key-0123456789"),
    ):
        token = encode_token(token_key(key), payload)
        assert await failure(stub.GetStats(pb.GetStatsRequest(), metadata=bearer(token))) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHORIZED",
        )
