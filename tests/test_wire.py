"""The frame codec and canonical hash (SPEC §2, §3.1; catalogue 1, 2, 9, 10)."""

from __future__ import annotations

import math

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire


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


def test_snapshot_hash_vector() -> None:
    digest = wire.snapshot_hash(
        name="eu1",
        process_uid="p_1",
        agent_version="1.0.0",
        protocol_version=3,
        endpoint_url="wss://eu1",
        labels={"region": "eu"},
        max_connections=None,
        max_rooms=10,
        auto_create=True,
        room_types=["match"],
        rooms=[("r1", "match", 3, "fleet")],
        status="active",
    )
    assert digest == "23d9d53e385c3d97"


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
