"""Admin-key auth, the failed-auth throttle, audit lines and error hygiene (SPEC §11, §12)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server import Orchestrator
from fleet_server._auth import fingerprint
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, failure
from tests.support.keys import ADMIN, KEY

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub

Metadata = tuple[tuple[str, str], ...]
Call = Callable[["FleetControlAsyncStub", Metadata], Awaitable[Any]]


async def _watch(stub: FleetControlAsyncStub, metadata: Metadata) -> None:
    async for _ in stub.WatchEvents(pb.WatchEventsRequest(), metadata=metadata):
        pass


CALLS: dict[str, Call] = {
    "GetStats": lambda s, m: s.GetStats(pb.GetStatsRequest(), metadata=m),
    "ListInstances": lambda s, m: s.ListInstances(pb.ListInstancesRequest(), metadata=m),
    "GetInstance": lambda s, m: s.GetInstance(pb.GetInstanceRequest(instance_id="i"), metadata=m),
    "ListInstanceRooms": lambda s, m: s.ListInstanceRooms(
        pb.ListInstanceRoomsRequest(instance_id="i"), metadata=m
    ),
    "DrainInstance": lambda s, m: s.DrainInstance(
        pb.DrainInstanceRequest(instance_id="i"), metadata=m
    ),
    "UndrainInstance": lambda s, m: s.UndrainInstance(
        pb.UndrainInstanceRequest(instance_id="i"), metadata=m
    ),
    "ListRooms": lambda s, m: s.ListRooms(pb.ListRoomsRequest(), metadata=m),
    "GetRoom": lambda s, m: s.GetRoom(pb.GetRoomRequest(room_id="r"), metadata=m),
    "CreateRoom": lambda s, m: s.CreateRoom(pb.CreateRoomRequest(type="match"), metadata=m),
    "DestroyRoom": lambda s, m: s.DestroyRoom(pb.DestroyRoomRequest(room_id="r"), metadata=m),
    "WatchEvents": _watch,
}

BAD_METADATA: dict[str, Metadata] = {
    "missing": (),
    "unknown-key": (("authorization", "Bearer not-a-configured-key-123456"),),
    "agent-key": (("authorization", f"Bearer {KEY}"),),
    "wrong-scheme": (("authorization", f"Basic {ADMIN}"),),
    "no-token": (("authorization", "Bearer "),),
    "bare-key": (("authorization", ADMIN),),
}


@pytest.mark.parametrize("method", list(CALLS))
@pytest.mark.parametrize("metadata", list(BAD_METADATA.values()), ids=list(BAD_METADATA))
async def test_every_call_without_an_admin_key_is_unauthenticated(
    stub: FleetControlAsyncStub, method: str, metadata: Metadata
) -> None:
    assert await failure(CALLS[method](stub, metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHORIZED",
    )


async def test_the_bearer_scheme_is_case_insensitive(stub: FleetControlAsyncStub) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        metadata = (("authorization", f"{scheme}   {ADMIN}"),)
        await stub.GetStats(pb.GetStatsRequest(), metadata=metadata)


@pytest.mark.parametrize("orch_options", [{"admin_key": ["old-admin-key-0123456789", ADMIN]}])
async def test_any_listed_admin_key_works(stub: FleetControlAsyncStub) -> None:
    for key in ("old-admin-key-0123456789", ADMIN):
        await stub.GetStats(pb.GetStatsRequest(), metadata=(("authorization", f"Bearer {key}"),))


@pytest.mark.parametrize("orch_options", [{"auth_failure_limit": 3}])
async def test_repeated_failures_throttle_the_peer_even_with_a_valid_key(
    stub: FleetControlAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet")
    bad = (("authorization", "Bearer wrong-key-0123456789abcdef"),)
    for _ in range(3):
        assert (await failure(stub.GetStats(pb.GetStatsRequest(), metadata=bad)))[1] == (
            "UNAUTHORIZED"
        )
    for call in (
        stub.GetStats(pb.GetStatsRequest(), metadata=AUTH),
        stub.CreateRoom(pb.CreateRoomRequest(type="match"), metadata=AUTH),
        _watch(stub, AUTH),
    ):
        assert await failure(call) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "AUTH_THROTTLED")
    messages = [r.getMessage() for r in caplog.records if r.name == "fleet.grpc"]
    assert messages.count("auth failed ip=127.0.0.1 route=GRPC GetStats") == 3
    assert "auth throttled ip=127.0.0.1 route=GRPC GetStats" in messages
    assert "auth throttled ip=127.0.0.1 route=GRPC WatchEvents" in messages
    assert "wrong-key" not in caplog.text and ADMIN not in caplog.text


@pytest.mark.parametrize("orch_options", [{"auth_failure_limit": 2}])
async def test_grpc_and_the_agent_endpoint_share_one_throttle(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    for _ in range(2):
        await failure(stub.GetStats(pb.GetStatsRequest(), metadata=()))
    assert orch._auth.throttle.blocked("127.0.0.1")


async def test_successful_calls_cost_no_tokens(
    orch: Orchestrator, stub: FleetControlAsyncStub
) -> None:
    for _ in range(30):
        await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH)
    assert not orch._auth.throttle.blocked("127.0.0.1") and len(orch._auth.throttle) == 0


async def test_control_calls_write_one_audit_line_each(
    orch: Orchestrator,
    stub: FleetControlAsyncStub,
    agents: RawAgents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fleet.audit")
    agent = await agents()
    await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH)
    await stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="a1"), metadata=AUTH)
    await failure(stub.CreateRoom(pb.CreateRoomRequest(type="match", room_id="a1"), metadata=AUTH))
    await stub.DestroyRoom(pb.DestroyRoomRequest(room_id="a1"), metadata=AUTH)
    await failure(stub.DestroyRoom(pb.DestroyRoomRequest(room_id="a1"), metadata=()))
    await stub.DrainInstance(pb.DrainInstanceRequest(instance_id=agent.instance_id), metadata=AUTH)
    await failure(stub.UndrainInstance(pb.UndrainInstanceRequest(instance_id="i_x"), metadata=AUTH))
    key = fingerprint(ADMIN)
    assert [r.getMessage() for r in caplog.records if r.name == "fleet.audit"] == [
        f"audit route=GRPC CreateRoom key={key} ip=127.0.0.1 outcome=OK",
        f"audit route=GRPC CreateRoom key={key} ip=127.0.0.1 outcome=ALREADY_EXISTS",
        f"audit route=GRPC DestroyRoom key={key} ip=127.0.0.1 outcome=OK",
        "audit route=GRPC DestroyRoom key=unknown ip=127.0.0.1 outcome=UNAUTHENTICATED",
        f"audit route=GRPC DrainInstance key={key} ip=127.0.0.1 outcome=OK",
        f"audit route=GRPC UndrainInstance key={key} ip=127.0.0.1 outcome=NOT_FOUND",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "fleet.audit")
    assert ADMIN not in caplog.text


async def test_an_unexpected_exception_is_internal_and_logged(
    orch: Orchestrator,
    stub: FleetControlAsyncStub,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(instance_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(orch.fleet, "get_instance", broken)
    try:
        await stub.GetInstance(pb.GetInstanceRequest(instance_id="i"), metadata=AUTH)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INTERNAL
        assert dict(error.trailing_metadata() or ()).get("fleet-cause") == "INTERNAL"
        assert "secret" not in (error.details() or "")
    else:
        raise AssertionError("the call succeeded")
    [record] = [r for r in caplog.records if r.name == "fleet.grpc"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "grpc call failed method=GetInstance"
