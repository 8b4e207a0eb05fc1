"""A one-frame reply whose rooms or head (fields 5–13) were sent as the same bytes as
the applied snapshot's is not read again (``fleet_server._state_layout``)."""

from __future__ import annotations

from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server._replies import Reply, apply_reply
from fleet_server._snapshot import ReportedRoom, SnapshotRejectedError, parse_snapshot
from fleet_server._state_layout import rooms_key, state_layout
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import harness

ROOMS = [("r1", "match", 3, "fleet"), ("r2", "match", 0, "local"), ("r3", "duel", 7, "fleet")]


def _frame(rooms: list[tuple[str, str, int, str]], seq: int = 1, **fields: Any) -> bytes:
    state = agent_pb2.State(
        req_id=f"poll_{seq}",
        full=True,
        seq=seq,
        hash=f"h{seq}",
        name="eu1",
        process_uid="p_1",
        agent_version="1.0.0",
        protocol_version=3,
        endpoint_url="wss://eu1.example",
        auto_create=True,
        room_types=["match", "duel"],
        status="active",
        **fields,
    )
    for room_id, room_type, connections, origin in rooms:
        state.rooms.add(id=room_id, type=room_type, connections=connections, origin=origin)
    return wire.encode_frame(agent_pb2.Frame(state=state))


def _layout(frame: bytes) -> Any:
    return state_layout(frame, rooms=True)


def test_the_same_rooms_give_the_same_key_whatever_else_changed() -> None:
    first = rooms_key(_frame(ROOMS, seq=1))
    assert first is not None and first[0] > 0
    assert rooms_key(_frame(ROOMS, seq=2, labels={"region": "eu"})) == first
    assert rooms_key(_frame([*ROOMS[:2], ("r3", "duel", 8, "fleet")])) != first
    assert rooms_key(_frame(ROOMS[:2])) != first
    assert rooms_key(_frame([])) == (0, 0)


def test_the_agents_own_encoder_gives_the_protobuf_key() -> None:
    head = agent_pb2.State(hash="h1", name="eu1").SerializeToString()
    tail = agent_pb2.State(status="active").SerializeToString()
    entries = [wire.room_entry(row) for row in ROOMS]
    ours = wire.state_frame("poll_1", 1, head, entries, tail, full=True)
    state = agent_pb2.State(req_id="poll_1", full=True, seq=1, hash="h1", name="eu1")
    for room_id, room_type, connections, origin in ROOMS:
        state.rooms.add(id=room_id, type=room_type, connections=connections, origin=origin)
    state.status = "active"
    assert ours == wire.encode_frame(agent_pb2.Frame(state=state))
    assert rooms_key(ours) == rooms_key(_frame(ROOMS))


def test_rooms_in_two_runs_other_frames_and_cut_frames_have_no_key() -> None:
    whole = _frame(ROOMS)
    entries = b"".join(wire.room_entry(row) for row in ROOMS)
    start = whole.index(entries)
    status = agent_pb2.State(status="active").SerializeToString()
    first = len(wire.room_entry(ROOMS[0]))
    # 5: the version bytes, the state tag and a length of two bytes
    body = whole[5:start] + entries[:first] + status + entries[first:]
    two_runs = wire.HEADER + b"\x1a" + wire.varint(len(body)) + body
    assert wire.decode_frame(two_runs).state.rooms[2].id == "r3"  # well-formed protobuf
    assert rooms_key(two_runs) is None
    poll = wire.encode_frame(agent_pb2.Frame(poll=agent_pb2.Poll(req_id="p", status="active")))
    assert rooms_key(poll) is None
    assert rooms_key(whole[:-3]) is None
    assert rooms_key(b"") is None


def test_rooms_sent_as_the_same_bytes_are_taken_over_and_changed_ones_read() -> None:
    frame = _frame(ROOMS)
    first = parse_snapshot(wire.decode_frame(frame).state, None, None, _layout(frame))
    assert first.rooms["r2"] == ReportedRoom("match", 0, True)
    again = _frame(ROOMS, seq=2)
    second = parse_snapshot(wire.decode_frame(again).state, first, None, _layout(again))
    assert second.rooms is first.rooms and second.seq == 2
    changed = _frame([("r1", "match", 4, "fleet"), *ROOMS[1:]], seq=3)
    third = parse_snapshot(wire.decode_frame(changed).state, second, None, _layout(changed))
    assert third.rooms is not second.rooms and third.rooms["r1"].connections == 4
    unkeyed = parse_snapshot(wire.decode_frame(again).state, third)  # no key: read
    assert unkeyed.rooms is not third.rooms and unkeyed.rooms["r1"].connections == 3


async def test_a_forced_full_reply_of_a_quiet_agent_takes_its_rooms_over() -> None:
    """Every twelfth poll asks for a full reply; a quiet agent's rooms come as the same
    bytes and are not read again, and a change is still seen."""
    async with harness(heartbeat_ms=20) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 1), "r2": RawRoom("match", 2)})
        instance = h.link(agent).instance
        joined = instance.snapshot
        assert joined is not None and joined.rooms_key is not None  # the first poll is forced
        await wait_for(lambda: instance.snapshot is not joined, timeout=10)  # the next forced
        assert instance.snapshot is not None and instance.snapshot.rooms is joined.rooms
        agent.rooms["r2"] = RawRoom("match", 5)
        await wait_for(lambda: h.orch.fleet.stats.connections == 6)
        del agent.rooms["r1"]
        await wait_for(lambda: h.orch.fleet.get_room("r1") is None)
        assert h.orch.fleet.stats.connections == 5


def test_the_same_fields_give_the_same_head_whatever_the_rooms_and_status() -> None:
    first = state_layout(_frame(ROOMS, seq=1, labels={"region": "eu"}))
    assert first is not None and b"eu1" in first.head and b"region" in first.head
    assert first.rooms is None and not first.accepted and not first.extended
    other = state_layout(_frame(ROOMS[:1], seq=2, labels={"region": "eu"}, base_hash="h1"))
    assert other is not None and other.head == first.head and other.extended
    assert state_layout(_frame(ROOMS, labels={"region": "us"})).head != first.head  # type: ignore[union-attr]
    accepted = state_layout(_frame(ROOMS, accepted_reservations=["s1"]))
    assert accepted is not None and accepted.accepted


def test_a_head_field_after_another_field_gives_no_layout() -> None:
    whole = _frame(ROOMS)
    name = agent_pb2.State(name="us9").SerializeToString()
    body = whole[5:] + name  # a second name after the status: protobuf keeps the last
    again = wire.HEADER + b"\x1a" + wire.varint(len(body)) + body
    assert wire.decode_frame(again).state.name == "us9"
    assert state_layout(again) is None


def test_a_reply_with_the_same_head_takes_the_fields_over_and_checks_the_rest() -> None:
    frame = _frame(ROOMS, labels={"region": "eu"})
    first = parse_snapshot(wire.decode_frame(frame).state, None, None, _layout(frame))
    again = _frame(ROOMS[:2], seq=2, labels={"region": "eu"}, accepted_reservations=["s1"])
    second = parse_snapshot(wire.decode_frame(again).state, first, None, _layout(again))
    assert second.labels is first.labels and second.head is first.head
    assert second.name == "eu1" and second.room_types == ("duel", "match")
    assert second.accepted_reservations == ("s1",) and set(second.rooms) == {"r1", "r2"}
    relabelled = _frame(ROOMS, seq=3, labels={"region": "us"})
    third = parse_snapshot(wire.decode_frame(relabelled).state, second, None, _layout(relabelled))
    assert third.labels == {"region": "us"} and third.head != first.head
    gone = wire.decode_frame(relabelled).state
    gone.status = "gone"
    empty = wire.decode_frame(relabelled).state
    empty.accepted_reservations.append("")
    for state, reason in ((gone, "status"), (empty, "accepted_reservations")):
        bad = wire.encode_frame(agent_pb2.Frame(state=state))
        assert _layout(bad).head == third.head
        with pytest.raises(SnapshotRejectedError, match=reason):
            parse_snapshot(state, third, None, _layout(bad))


def test_a_delta_takes_the_head_over_and_never_a_rooms_key() -> None:
    """A delta lists some rooms only: its rooms' bytes never stand for all the rooms,
    even when it answers a forced poll (a later full reply of those bytes is read)."""
    frame = _frame(ROOMS)
    base = parse_snapshot(wire.decode_frame(frame).state, None, None, _layout(frame))
    only = [("r1", "match", 9, "fleet")]
    sent = _frame(only, seq=2, base_hash="h1")
    snapshot, touched = apply_reply(
        Reply(wire.decode_frame(sent).state, {"r1": ReportedRoom("match", 9, False)}),
        base,
        None,
        _layout(sent),
    )
    assert snapshot.rooms_key is None and snapshot.labels is base.labels
    assert (
        touched == frozenset({"r1"})
        and snapshot.rooms["r1"].connections == 9
        and len(snapshot.rooms) == 3
    )
    full = _frame(only, seq=3)
    after = parse_snapshot(wire.decode_frame(full).state, snapshot, None, _layout(full))
    assert set(after.rooms) == {"r1"}
