"""The frame codec and canonical hash (SPEC §2, §3.1; catalogue 1, 2, 9, 10)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire

PROPERTY = settings(max_examples=100, derandomize=True, database=None, deadline=None)


def test_canonical_json_sorts_keys_at_every_depth_and_keeps_array_order() -> None:
    a = {"z": {"b": 1, "a": [3, 1, 2]}, "é": "ü", "a": None}
    b = {"a": None, "é": "ü", "z": {"a": [3, 1, 2], "b": 1}}
    assert wire.canonical_json(a) == wire.canonical_json(b)
    assert wire.canonical_json(a) == '{"a":null,"z":{"a":[3,1,2],"b":1},"é":"ü"}'
    assert wire.hash64(a) == wire.hash64(b)


def test_canonical_json_normalizes_numbers() -> None:
    assert wire.canonical_json([-0.0, 2.0, math.nan, math.inf, 1.5]) == "[0,2,null,null,1.5]"


def test_hash_vectors() -> None:
    assert wire.hash64({"a": 1, "b": 2}) == "43258cff783fe703"
    assert wire.hash64([]) == "4f53cda18c2baa0c"
    h = wire.hash64({"x": 1})
    assert len(h) == 16 and h == h.lower() and int(h, 16) >= 0


SPEC_VECTOR: dict[str, Any] = {
    "name": "eu1",
    "process_uid": "p_1",
    "agent_version": "1.0.0",
    "protocol_version": 3,
    "endpoint_url": "wss://eu1",
    "labels": {"region": "eu"},
    "max_connections": None,
    "max_rooms": 10,
    "auto_create": True,
    "room_types": ["match"],
    "status": "active",
}
RANKED = '{"mode":"ranked","teams":2}'


def test_snapshot_hash_vector() -> None:
    digest = wire.snapshot_hash(**SPEC_VECTOR, rooms=[("r1", "match", 3, "fleet")])
    assert digest == "23d9d53e385c3d97"
    unset = [("r1", "match", 3, "fleet", "", None, False)]
    assert wire.snapshot_hash(**SPEC_VECTOR, rooms=unset, accepted_reservations=()) == digest


def test_snapshot_hash_vectors_with_matchmaking_fields() -> None:
    """docs/matchmaking.md §2."""
    with_metadata = [("r1", "match", 3, "fleet", RANKED, None, False)]
    assert wire.snapshot_hash(**SPEC_VECTOR, rooms=with_metadata) == "0a29ed195853b204"
    everything = [("r1", "match", 3, "fleet", RANKED, 10, True)]
    digest = wire.snapshot_hash(**SPEC_VECTOR, rooms=everything, accepted_reservations=["s_1"])
    assert digest == "0f8cfa76c7f2be67"
    doc_text = (
        '{"acceptedReservations":["s_1"],"agentVersion":"1.0.0","autoCreate":true,'
        '"capacity":{"maxConnections":null,"maxRooms":10},"endpointUrl":"wss://eu1",'
        '"labels":{"region":"eu"},"name":"eu1","processUid":"p_1","protocolVersion":3,'
        '"roomTypes":["match"],"rooms":[{"connections":3,"id":"r1","locked":true,'
        '"maxConnections":10,"metadata":{"mode":"ranked","teams":2},"origin":"fleet",'
        '"type":"match"}],"status":"active"}'
    )
    assert wire.hash64_text(doc_text) == digest
    assert wire.object_text({"teams": 2, "mode": "ranked"}, 2048, "metadata") == RANKED


def test_metadata_text_refuses_non_objects_non_json_and_oversize_values() -> None:
    assert (
        wire.object_text({"teams": 2, "mode": "ranked", "map": "dust"}, 2048, "metadata")
        == '{"map":"dust","mode":"ranked","teams":2}'
    )
    for bad in ([1], "x", 3, None, {"a": object()}, {"a": b"x"}):
        with pytest.raises(ValueError, match="metadata"):
            wire.object_text(bad, 2048, "metadata")
    with pytest.raises(ValueError, match="at most 2048 bytes"):
        wire.object_text({"a": "x" * 2041}, 2048, "metadata")
    assert len(wire.object_text({"a": "x" * 2040}, 2048, "metadata")) == 2048
    assert wire.parse_object_text("", 4096, "options") == {}
    assert wire.parse_object_text('{"map":"dust"}', 4096, "options") == {"map": "dust"}
    for text in ("[1]", "nope", '"s"', "{"):
        with pytest.raises(ValueError, match="options must be a JSON object"):
            wire.parse_object_text(text, 4096, "options")


# --- properties ----------------------------------------------------------------

IDS = st.text(min_size=1, max_size=12)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_OBJECTS = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=5,
    ),
    max_size=4,
)
PLAIN_ROOMS = st.lists(
    st.tuples(IDS, IDS, st.integers(0, 10**6), st.sampled_from(["fleet", "local"])),
    max_size=5,
    unique_by=lambda row: row[0],
)


def _reference_hash(fields: dict[str, Any], rooms: list[dict[str, Any]], **extra: Any) -> str:
    """The snapshot hash spelled out as the canonical JSON of one value (SPEC §2)."""
    value = {
        "name": fields["name"],
        "processUid": fields["process_uid"],
        "agentVersion": fields["agent_version"],
        "protocolVersion": fields["protocol_version"],
        "endpointUrl": fields["endpoint_url"],
        "labels": fields["labels"],
        "capacity": {"maxConnections": fields["max_connections"], "maxRooms": fields["max_rooms"]},
        "autoCreate": fields["auto_create"],
        "roomTypes": sorted(fields["room_types"]),
        "rooms": sorted(rooms, key=lambda room: room["id"]),
        "status": fields["status"],
        **extra,
    }
    return wire.hash64(value)


@PROPERTY
@given(
    rooms=PLAIN_ROOMS,
    labels=st.dictionaries(IDS, st.text(max_size=8), max_size=3),
    room_types=st.lists(IDS, max_size=3),
)
def test_a_snapshot_without_the_new_fields_hashes_as_before(
    rooms: list[tuple[str, str, int, str]], labels: dict[str, str], room_types: list[str]
) -> None:
    fields = {**SPEC_VECTOR, "labels": labels, "room_types": room_types}
    entries = [{"id": i, "type": t, "connections": c, "origin": o} for i, t, c, o in rooms]
    before = _reference_hash(fields, entries)
    assert wire.snapshot_hash(**fields, rooms=rooms) == before
    unset: list[wire.RoomRow] = [(*row, "", None, False) for row in rooms]
    assert wire.snapshot_hash(**fields, rooms=unset, accepted_reservations=[]) == before


MATCHMAKING_ROOMS = st.lists(
    st.tuples(
        IDS,
        IDS,
        st.integers(0, 10**6),
        st.sampled_from(["fleet", "local"]),
        JSON_OBJECTS,
        st.none() | st.integers(0, 10**6),
        st.booleans(),
    ),
    max_size=3,
    unique_by=lambda row: row[0],
)


@PROPERTY
@given(
    rooms=MATCHMAKING_ROOMS,
    accepted=st.lists(st.text(min_size=1, max_size=8), max_size=4, unique=True),
)
def test_the_new_fields_hash_as_the_canonical_json_of_the_whole_snapshot(
    rooms: list[tuple[str, str, int, str, dict[str, Any], int | None, bool]],
    accepted: list[str],
) -> None:
    rows: list[wire.RoomRow] = []
    entries: list[dict[str, Any]] = []
    for rid, rtype, conns, origin, meta, seats, lock in rooms:
        text = wire.object_text(meta, 10**6, "metadata")
        text = "" if text == "{}" else text
        rows.append((rid, rtype, conns, origin, text, seats, lock))
        entry = {"id": rid, "type": rtype, "connections": conns, "origin": origin}
        if text:
            entry["metadata"] = meta
        if seats is not None:
            entry["maxConnections"] = seats
        if lock:
            entry["locked"] = True
        entries.append(entry)
    extra = {"acceptedReservations": sorted(accepted)} if accepted else {}
    expected = _reference_hash(SPEC_VECTOR, entries, **extra)
    got = wire.snapshot_hash(**SPEC_VECTOR, rooms=rows, accepted_reservations=accepted)
    assert got == expected


@PROPERTY
@given(metadata=JSON_OBJECTS)
def test_the_canonical_text_of_metadata_does_not_depend_on_key_order(
    metadata: dict[str, Any],
) -> None:
    def reversed_order(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reversed_order(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reversed_order(v) for v in value]
        return value

    text = wire.object_text(metadata, 10**6, "metadata")
    assert wire.object_text(reversed_order(metadata), 10**6, "metadata") == text
    assert wire.canonical_json(json.loads(text)) == text
    row: wire.RoomRow = ("r1", "match", 0, "fleet", text, None, False)
    shuffled = wire.object_text(reversed_order(metadata), 10**6, "metadata")
    assert wire.room_entry_text(row) == wire.room_entry_text(
        ("r1", "match", 0, "fleet", shuffled, None, False)
    )


def _frames() -> list[agent_pb2.Frame]:
    state = agent_pb2.State(req_id="poll_1", full=True, seq=1, hash="h", name="n")
    state.capacity.max_rooms = 0
    state.labels["region"] = "eu"
    state.rooms.add(id="r1", type="match", connections=2, origin="fleet")
    return [
        agent_pb2.Frame(hello=agent_pb2.Hello(instance_id="i_x", protocol_version=3)),
        agent_pb2.Frame(poll=agent_pb2.Poll(req_id="poll_1", known_hash="abc", status="active")),
        agent_pb2.Frame(poll=agent_pb2.Poll(req_id="poll_2", status="active")),
        agent_pb2.Frame(state=state),
        agent_pb2.Frame(state=agent_pb2.State(req_id="poll_3", full=False, seq=2, hash="h")),
        agent_pb2.Frame(cmd=agent_pb2.Command(cmd_id="cmd_1", op="create", room_id="r")),
        agent_pb2.Frame(ack=agent_pb2.Ack(cmd_id="cmd_1", ok=False, error="boom", exists=True)),
    ]


@pytest.mark.parametrize("frame", _frames())
def test_every_frame_variant_round_trips(frame: agent_pb2.Frame) -> None:
    data = wire.encode_frame(frame)
    assert data[:2] == bytes([3, 0])
    assert wire.decode_frame(data) == frame


def test_presence_is_kept() -> None:
    polls = [wire.decode_frame(wire.encode_frame(f)).poll for f in _frames()[1:3]]
    assert polls[0].HasField("known_hash") and not polls[1].HasField("known_hash")
    empty = wire.decode_frame(
        wire.encode_frame(agent_pb2.Frame(poll=agent_pb2.Poll(req_id="p", known_hash="")))
    )
    assert empty.poll.HasField("known_hash")
    state = wire.decode_frame(wire.encode_frame(_frames()[3])).state
    assert state.capacity.HasField("max_rooms") and state.capacity.max_rooms == 0
    assert not state.capacity.HasField("max_connections")
    hash_only = wire.decode_frame(wire.encode_frame(_frames()[4])).state
    assert hash_only.name == "" and len(hash_only.rooms) == 0


@pytest.mark.parametrize("major", [123, 99, 2])
def test_wrong_major_is_a_version_error(major: int) -> None:
    with pytest.raises(wire.ProtocolVersionError) as info:
        wire.decode_frame(bytes([major, 0]) + b"{}")
    assert info.value.major == major


@pytest.mark.parametrize("data", [b"", b"\x03"])
def test_short_message_is_truncated(data: bytes) -> None:
    with pytest.raises(wire.TruncatedFrameError):
        wire.decode_frame(data)


def test_garbage_body_is_undecodable() -> None:
    with pytest.raises(wire.UndecodableFrameError):
        wire.decode_frame(bytes([3, 0, 0xFF, 0xFF, 0xFF, 0xFF]))


def test_oversize_message_is_refused_before_parsing() -> None:
    with pytest.raises(wire.FrameTooLargeError):
        wire.decode_frame(bytes([3, 0]) + b"\x00" * wire.MAX_FRAME_BYTES)
    assert isinstance(wire.FrameTooLargeError(1), wire.WireError)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32 - 1])
def test_varint_is_protobufs_encoding(value: int) -> None:
    encoded = agent_pb2.State(seq=value).SerializeToString()
    assert wire.varint(value) == (encoded[1:] if value else b"\x00")
