"""Protocol-3 frames for simulated agents, built from precomputed bytes.

A reply is ``[3, 0]`` + ``Frame{state: State}``. Protobuf fields may come in any
order and a parser merges them, so a State is the two per-reply fields (``req_id``,
``seq``) in front of a *tail* that only changes with the agent's snapshot: for a
hash-only reply the tail is just the ``hash`` field, for a full reply it is the whole
serialized snapshot. Building a reply is then two varints and a join, no message
objects. Incoming frames are decoded with the generated ``agent_pb2`` classes.

Rooms are :data:`fleet_agent.wire.RoomRow` tuples: ``(id, type, connections, origin)``,
or with ``(metadata, max_connections, locked)`` appended (CONTRACT §11).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_agent.wire import RoomRow, varint

__all__ = [
    "AGENT_VERSION",
    "ack_frame",
    "full_tail",
    "hash_tail",
    "state_frame",
]

AGENT_VERSION: Final = "1.0.0-loadgen"
_HEADER: Final = wire.HEADER
_TAG_STATE: Final = b"\x1a"  # Frame.state, field 3, length-delimited
_TAG_REQ_ID: Final = b"\x0a"  # State.req_id, field 1
_TAG_SEQ: Final = b"\x18"  # State.seq, field 3, varint
_TAG_HASH: Final = b"\x22"  # State.hash, field 4


def hash_tail(digest: str) -> bytes:
    """The tail of a hash-only State: ``full`` stays false (absent), only ``hash``."""
    raw = digest.encode()
    return _TAG_HASH + varint(len(raw)) + raw


def full_tail(
    *,
    digest: str,
    name: str,
    process_uid: str,
    endpoint_url: str,
    labels: Mapping[str, str],
    max_rooms: int | None,
    room_types: Iterable[str],
    rooms: Iterable[RoomRow],
    status: str,
    base_hash: bytes = b"",
    removed: Iterable[str] = (),
) -> bytes:
    """The tail of a full State: everything but ``req_id`` and ``seq``; with
    ``base_hash``, a delta listing only ``rooms`` (added or changed) and ``removed``."""
    state = agent_pb2.State(
        full=True,
        hash=digest,
        name=name,
        process_uid=process_uid,
        agent_version=AGENT_VERSION,
        protocol_version=wire.PROTOCOL_MAJOR,
        endpoint_url=endpoint_url,
        auto_create=True,
        room_types=sorted(room_types),
        status=status,
    )
    state.labels.update(labels)
    if max_rooms is not None:
        state.capacity.max_rooms = max_rooms
    add = state.rooms.add
    for row in rooms:
        room = add(id=row[0], type=row[1], connections=row[2], origin=row[3])
        if len(row) == 7:
            if row[4]:
                room.metadata = row[4]
            if row[5] is not None:
                room.max_connections = row[5]
            room.locked = row[6]
    if base_hash:
        state.base_hash = base_hash.decode()
        state.removed_rooms.extend(removed)
    return state.SerializeToString()


def state_frame(req_id: bytes, seq: int, tail: bytes) -> bytes:
    """One State reply as a whole WebSocket message."""
    body = _TAG_REQ_ID + varint(len(req_id)) + req_id + _TAG_SEQ + varint(seq) + tail
    return b"".join((_HEADER, _TAG_STATE, varint(len(body)), body))


def ack_frame(ack: agent_pb2.Ack) -> bytes:
    return wire.encode_frame(agent_pb2.Frame(ack=ack))
