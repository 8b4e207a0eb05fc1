"""The one event fan-out: encoded once per format, bounded queues, one overflow rule."""

from __future__ import annotations

import asyncio
from typing import Any

from fleet_server._events import EventHub, EventType


async def test_each_event_is_encoded_once_per_encoder_whatever_the_subscribers() -> None:
    hub = EventHub()
    calls: list[str] = []

    def upper(kind: str, payload: Any) -> bytes:
        calls.append("upper")
        return str(payload).upper().encode()

    def lower(kind: str, payload: Any) -> bytes:
        calls.append("lower")
        return str(payload).lower().encode()

    subs = [hub.subscribe("a", upper, limit=10, max_items=10) for _ in range(5)]
    other = hub.subscribe("b", lower, limit=10, max_items=10)
    hub.emit([(EventType.SYNC, "Xy"), (EventType.ROOM_CREATE, "Zw")])
    assert sorted(calls) == ["lower", "lower", "upper", "upper"]
    for sub in subs:
        assert sub is not None and await sub.batch() == [b"XY", b"ZW"]
    assert other is not None and await other.batch() == [b"xy", b"zw"]


async def test_a_full_queue_cuts_its_subscriber_off_and_counts_the_drop() -> None:
    hub = EventHub()
    cut: list[str] = []
    slow = hub.subscribe(
        "sse", lambda k, p: b"x", limit=5, max_items=2, on_overflow=lambda: cut.append("slow")
    )
    fast = hub.subscribe("sse", lambda k, p: b"x", limit=5, max_items=2)
    assert slow is not None and fast is not None
    for _ in range(2):
        hub.emit([(EventType.SYNC, None)])
        assert await fast.batch() == [b"x"]
    hub.emit([(EventType.SYNC, None)])
    assert slow.overflowed and cut == ["slow"] and await slow.batch() == []
    assert not fast.overflowed and await fast.batch() == [b"x"]
    assert hub.dropped["sse"] == 3 and hub.count("sse") == 1  # two queued, the third


async def test_a_kind_at_its_limit_is_refused_and_end_all_delivers_what_is_queued() -> None:
    hub = EventHub()
    first = hub.subscribe("grpc", lambda k, p: b"e", limit=1, max_items=8)
    assert (
        first is not None and hub.subscribe("grpc", lambda k, p: b"e", limit=1, max_items=8) is None
    )
    hub.emit([(EventType.SYNC, None)])
    assert hub.end_all("grpc") == [first]
    assert await first.batch() == [b"e"] and await first.batch() == []
    assert len(hub) == 0 and not hub.wants(EventType.SYNC)


def test_event_types_are_the_contract_strings() -> None:
    assert [str(t) for t in EventType] == [
        "instance:join",
        "instance:leave",
        "instance:stale",
        "room:create",
        "room:destroy",
        "room:update",
        "sync",
    ]


async def test_an_emit_is_one_shared_chunk_joined_once_for_every_subscription() -> None:
    hub = EventHub()

    def encoder(kind: str, payload: Any) -> bytes:
        return bytes(payload)

    subs = [hub.subscribe("sse", encoder, limit=5, max_items=10) for _ in range(3)]
    hub.emit([(EventType.ROOM_CREATE, b"a;"), (EventType.ROOM_DESTROY, b"b;")])
    hub.emit([(EventType.SYNC, b"c;")])
    first = [await s.joined() for s in subs if s is not None]
    assert first == [b"a;b;c;"] * 3 and len(subs[0] or []) == 0
    hub.emit([(EventType.ROOM_CREATE, b"d;"), (EventType.SYNC, b"e;")])
    again = [await s.joined() for s in subs if s is not None]
    assert again == [b"d;e;"] * 3 and again[0] is again[1] is again[2]  # joined once


async def test_a_multi_event_emit_overflows_exactly_as_one_event_at_a_time_would() -> None:
    hub = EventHub()
    by_count = hub.subscribe("a", lambda k, p: p, limit=5, max_items=3)
    by_bytes = hub.subscribe("b", lambda k, p: p + b"", limit=5, max_items=99, max_bytes=4)
    assert by_count is not None and by_bytes is not None
    hub.emit([(EventType.SYNC, b"xx"), (EventType.SYNC, b"yy"), (EventType.SYNC, b"zzzz")])
    # three events fit three slots; 2 + 2 bytes were queued when the third came: cut
    assert not by_count.overflowed and await by_count.batch() == [b"xx", b"yy", b"zzzz"]
    assert by_bytes.overflowed and hub.dropped["b"] == 3  # the three events of the emit
    hub.emit([(EventType.SYNC, b"1"), (EventType.SYNC, b"2")])
    hub.emit([(EventType.SYNC, b"3"), (EventType.SYNC, b"4")])  # a fourth event: cut
    assert by_count.overflowed and await by_count.batch() == [] and hub.dropped["a"] == 4


async def test_an_emit_from_a_listener_follows_the_events_being_delivered() -> None:
    hub = EventHub()
    sub = hub.subscribe("sse", lambda k, p: p, limit=5, max_items=10)
    heard: list[bytes] = []

    def on_create(payload: bytes) -> None:
        heard.append(payload)
        hub.emit([(EventType.SYNC, b"nested")])

    hub.on(EventType.ROOM_CREATE, on_create)
    hub.on(EventType.ROOM_DESTROY, heard.append)
    hub.on(EventType.SYNC, heard.append)
    hub.emit([(EventType.ROOM_CREATE, b"create"), (EventType.ROOM_DESTROY, b"destroy")])
    assert heard == [b"create", b"destroy", b"nested"]
    assert sub is not None and await sub.batch() == heard


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_with_a_writer_the_emits_of_one_loop_turn_go_out_in_one_write() -> None:
    """The consumer's task is not woken while its writer takes everything."""
    hub = EventHub()
    sub = hub.subscribe("sse", lambda k, p: f"{p};".encode(), limit=5, max_items=100)
    assert sub is not None
    written: list[bytes] = []

    def writer(data: bytes) -> bool:
        written.append(data)
        return True

    sub.write_with(writer)
    woken = asyncio.ensure_future(sub.joined())
    await _turns()
    hub.emit([(EventType.ROOM_CREATE, "a"), (EventType.ROOM_CREATE, "b")])
    hub.emit([(EventType.ROOM_DESTROY, "c")])
    assert written == []  # at the next loop turn, not inside the emit
    await _turns()
    hub.emit([(EventType.SYNC, "d")])
    await _turns()
    assert written == [b"a;b;c;", b"d;"]
    assert not woken.done() and len(sub) == 0
    sub.end()
    assert await woken == b""


async def test_a_refusing_writer_hands_the_queue_to_the_task_and_the_order_holds() -> None:
    """What the writer refused, and what came while the task wrote it, reach the task in
    order; once the task has emptied the queue, the writer writes again."""
    hub = EventHub()
    sub = hub.subscribe("sse", lambda k, p: f"{p};".encode(), limit=5, max_items=100)
    assert sub is not None
    room = [False]
    written: list[bytes] = []

    def writer(data: bytes) -> bool:
        if room[0]:
            written.append(data)
        return room[0]

    sub.write_with(writer)
    hub.emit([(EventType.ROOM_CREATE, "1")])
    await _turns()
    hub.emit([(EventType.ROOM_CREATE, "2")])  # the task owns the queue: not the writer's
    room[0] = True
    await _turns()
    assert written == []
    assert await sub.joined() == b"1;2;"
    waiting = asyncio.ensure_future(sub.joined())  # the queue is empty: the writer's again
    await _turns()
    hub.emit([(EventType.ROOM_CREATE, "3")])
    await _turns()
    assert written == [b"3;"] and not waiting.done()
    sub.end()
    assert await waiting == b""


async def test_a_writer_that_raises_or_a_consumer_that_never_reads_still_ends_by_the_rules() -> (
    None
):
    hub = EventHub()
    cut: list[str] = []
    sub = hub.subscribe(
        "sse", lambda k, p: b"x", limit=5, max_items=2, on_overflow=lambda: cut.append("cut")
    )
    assert sub is not None

    def broken(data: bytes) -> bool:
        raise ConnectionResetError("gone")

    sub.write_with(broken)
    hub.emit([(EventType.SYNC, None)])
    await _turns()
    assert len(sub) == 1 and not cut  # refused: left for the task, which never reads
    hub.emit([(EventType.SYNC, None)])
    hub.emit([(EventType.SYNC, None)])
    assert sub.overflowed and cut == ["cut"] and hub.dropped["sse"] == 3  # 2 queued + 1
