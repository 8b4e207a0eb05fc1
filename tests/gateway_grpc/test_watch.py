"""``WatchEvents``: the fleet's events, typed and in order; the stream cap and its ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb
from rivalis.fleet.v1 import control_pb2_grpc

from fleet_server import Orchestrator, RoomInfo
from fleet_server._events import EVENT_TYPES
from gateway import _grpc_watch
from gateway._grpc_messages import event_bytes
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, bearer, grpc_cause
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub

Watch = Any  # grpc.aio.UnaryStreamCall[pb.WatchEventsRequest, pb.FleetEvent]


async def open_watch(stub: FleetControlAsyncStub) -> Watch:
    """A WatchEvents call whose subscription is live (initial metadata has arrived)."""
    call = stub.WatchEvents(pb.WatchEventsRequest(), metadata=AUTH)
    await asyncio.wait_for(call.initial_metadata(), 5)
    return call


async def next_event(call: Watch, *, skip_sync: bool = True) -> pb.FleetEvent:
    while True:
        event = await asyncio.wait_for(call.read(), 5)
        assert isinstance(event, pb.FleetEvent), f"stream ended: {event!r}"
        if not (skip_sync and event.type == "sync"):
            return event


def watch_streams(orch: Orchestrator) -> int:
    assert orch._grpc is not None
    return orch._grpc.watch_streams


async def test_a_room_created_through_the_fleet_api_is_streamed(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()
    call = await open_watch(stub)
    room = await orch.fleet.create_room("match", room_id="m-1")
    event = await next_event(call)
    assert event.type == "room:create" and event.WhichOneof("data") == "room"
    assert event.room == pb.RoomInfo(
        metadata="{}",
        id="m-1",
        type="match",
        instance_id=agent.instance_id,
        endpoint_url=room.endpoint_url,
        local=False,
    )
    call.cancel()


async def test_a_room_created_over_rest_is_streamed(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()
    call = await open_watch(stub)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"http://127.0.0.1:{orch.port}/v1/rooms",
            json={"type": "match", "roomId": "from-rest"},
            headers=bearer(),
        )
        assert response.status == 201, await response.text()
    event = await next_event(call)
    assert event.type == "room:create"
    assert (event.room.id, event.room.instance_id) == ("from-rest", agent.instance_id)
    call.cancel()


async def test_events_arrive_typed_and_in_emission_order(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    seen: list[tuple[str, str]] = []

    def recorder(kind: str) -> Callable[[Any], None]:
        return lambda payload: seen.append((kind, type(payload).__name__))

    for kind in EVENT_TYPES:
        orch.on(kind, recorder(kind))
    call = await open_watch(stub)
    agent = await agents(name="w1", rooms={"r1": RawRoom("match", 2)})
    await orch.fleet.destroy_room("r1")
    await agent.close()
    await wait_for(lambda: orch.fleet.stats.instances == 0)
    await wait_for(lambda: seen[-1][0] == "sync")  # sync follows its burst of reconciles
    streamed: list[pb.FleetEvent] = []
    while len(streamed) < len(seen):
        streamed.append(await next_event(call, skip_sync=False))
    kinds = [e.type for e in streamed]
    assert kinds == [kind for kind, _ in seen]
    assert [k for k in kinds if k != "sync"] == [
        "instance:join",
        "room:create",
        "room:destroy",
        "instance:leave",
    ]
    payloads = {e.type: e.WhichOneof("data") for e in streamed}
    assert payloads == {
        "instance:join": "instance",
        "room:create": "room",
        "room:destroy": "room",
        "instance:leave": "instance",
        "sync": "stats",
    }
    join = streamed[0].instance
    assert (
        join.id == agent.instance_id and join.name == "w1" and [r.id for r in join.rooms] == ["r1"]
    )
    last_sync = [e for e in streamed if e.type == "sync"][-1].stats
    assert last_sync.instances == 0 and last_sync.state_hash == orch.fleet.stats.state_hash
    call.cancel()


async def test_each_event_is_encoded_once_for_every_stream(
    orch: Orchestrator,
    stub: FleetControlAsyncStub,
    agents: RawAgents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await agents()
    encoded: list[str] = []

    def counting(event_type: str, payload: Any) -> bytes:
        encoded.append(event_type)
        return event_bytes(event_type, payload)

    monkeypatch.setattr(_grpc_watch, "event_bytes", counting)
    calls = [await open_watch(stub) for _ in range(3)]
    await orch.fleet.create_room("match", room_id="once")
    for call in calls:
        event = await next_event(call)
        assert (event.type, event.room.id) == ("room:create", "once")
        call.cancel()
    assert encoded.count("room:create") == 1


async def test_a_stale_instance_is_streamed(
    orch: Orchestrator, stub: FleetControlAsyncStub, agents: RawAgents
) -> None:
    agent = await agents()
    call = await open_watch(stub)
    agent.auto_reply = False
    event = await next_event(call)
    assert event.type == "instance:stale" and event.instance.id == agent.instance_id
    call.cancel()


@pytest.mark.parametrize("orch_options", [{"sse_stream_limit": 2}])
async def test_streams_beyond_the_cap_are_refused_until_one_closes(
    orch: Orchestrator, stub: FleetControlAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    first = await open_watch(stub)
    second = await open_watch(stub)
    third = stub.WatchEvents(pb.WatchEventsRequest(), metadata=AUTH)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await third.read()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_cause(refused.value) == "SSE_LIMIT"
    assert "watch stream limit reached ip=127.0.0.1" in caplog.text
    first.cancel()
    await wait_for(lambda: watch_streams(orch) == 1)
    fourth = await open_watch(stub)
    assert watch_streams(orch) == 2
    second.cancel()
    fourth.cancel()
    await wait_for(lambda: watch_streams(orch) == 0)


@pytest.mark.parametrize("orch_options", [{"sse_stream_limit": 1}])
async def test_the_stream_cap_is_separate_from_the_sse_cap(
    orch: Orchestrator, stub: FleetControlAsyncStub
) -> None:
    async with aiohttp.ClientSession() as session:
        sse = await session.get(
            f"http://127.0.0.1:{orch.port}/v1/events",
            headers=bearer(),
        )
        assert sse.status == 200
        call = await open_watch(stub)  # the SSE stream does not count against it
        refused = stub.WatchEvents(pb.WatchEventsRequest(), metadata=AUTH)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await refused.read()
        assert grpc_cause(info.value) == "SSE_LIMIT"
        call.cancel()
        sse.close()


def _rooms(prefix: str, count: int, metadata_bytes: int = 0) -> list[tuple[str, Any]]:
    """``count`` room:update events (ids ``<prefix><i>``), each with that much metadata."""
    metadata = {"blob": "x" * metadata_bytes} if metadata_bytes else {}
    return [
        ("room:update", RoomInfo(f"{prefix}{i}", "m", 0, "i", "", False, metadata))
        for i in range(count)
    ]


async def test_a_burst_does_not_cut_a_stream_that_reads_but_a_stalled_one_is_cut(
    orch: Orchestrator,
    stub: FleetControlAsyncStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_grpc_watch, "QUEUE_BYTES", 128 * 1024)
    reader = await open_watch(stub)
    received: list[str] = []

    async def read() -> None:
        async for event in reader:
            if event.type == "room:update":
                received.append(event.room.id)

    reading = asyncio.create_task(read())
    # The stalled client never reads, on its own connection without BDP probing, so its
    # flow-control window stays at 64 KiB and holds the server's sends.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{orch.grpc_port}", options=[("grpc.http2.bdp_probe", 0)]
    ) as stalled_channel:
        stalled = await open_watch(control_pb2_grpc.FleetControlStub(stalled_channel))
        sent: list[str] = []
        for i in range(100):  # 16 KiB each: the stalled stream's window, then its queue fill
            big = _rooms(f"big{i}-", 1, 16 * 1024)
            orch._hub.emit(big)
            sent.append(big[0][1].id)
            await wait_for(lambda: received == sent, 5, message="a big event was not read")
            if orch._hub.dropped["grpc"]:
                break
        dropped = orch._hub.dropped["grpc"]  # the events queued for it, and the one that cut it
        assert dropped >= 2 and watch_streams(orch) == 1, "the stalled stream was never cut"
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                event = await asyncio.wait_for(stalled.read(), 5)
                assert event is not grpc.aio.EOF
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert grpc_cause(ended.value) == "SSE_LIMIT"
        assert "watch stream fell behind ip=127.0.0.1" in caplog.text
    # A burst of more events than the old 1,024-event queue, all queued in one loop turn:
    # the reader gets every one, in order, and keeps its stream.
    burst = _rooms("b", 1100)
    orch._hub.emit(burst)
    sent += [room.id for _, room in burst]
    await wait_for(lambda: len(received) == len(sent), 10, message="the burst was not read")
    assert received == sent
    assert orch._hub.dropped["grpc"] == dropped and not reading.done()
    assert watch_streams(orch) == 1
    reader.cancel()
    await asyncio.gather(reading, return_exceptions=True)


async def test_cancelling_a_stream_frees_its_slot_and_subscription(
    orch: Orchestrator, stub: FleetControlAsyncStub
) -> None:
    calls = [await open_watch(stub) for _ in range(3)]
    assert watch_streams(orch) == 3
    for call in calls:
        call.cancel()
    await wait_for(lambda: watch_streams(orch) == 0)
    assert len(orch._hub) == 0


async def test_shutdown_ends_open_streams(orch: Orchestrator, stub: FleetControlAsyncStub) -> None:
    call = await open_watch(stub)
    await orch.shutdown()
    assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
