"""Property tests over the agent wire codec and the snapshot validator.

Whatever bytes an agent sends, :func:`fleet_agent.wire.decode_frame` returns a Frame or
raises one of its typed :class:`~fleet_agent.wire.WireError` subclasses — never anything
else, which would escape the link's handler. Whatever State an agent reports,
:func:`fleet_server._snapshot.parse_snapshot` returns a snapshot within every SPEC §4
limit or raises :class:`~fleet_server._snapshot.SnapshotRejectedError` whose reason
quotes none of the agent's data.
"""

from __future__ import annotations

import os
import string
from urllib.parse import urlsplit

import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given
from hypothesis import strategies as st
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server import _snapshot
from fleet_server._snapshot import Snapshot, SnapshotRejectedError, parse_snapshot

# ``make fuzz`` runs thousands of examples per property; keep each test bounded all the same.
pytestmark = pytest.mark.timeout(900 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 60)

# protobuf strings are UTF-8: no lone surrogates
TEXT = st.characters(exclude_categories=["Cs"])
MARKER = "ZQXJ-MARK"  # planted in agent data; no rejection reason may contain it


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(TEXT, max_size=max_size)


def near(limit: int) -> st.SearchStrategy[int]:
    """Lengths at and around a limit, where validators go wrong."""
    return st.sampled_from([0, 1, limit - 1, limit, limit + 1])


def sized_text(limit: int) -> st.SearchStrategy[str]:
    return st.one_of(
        texts(24),
        near(limit).map(lambda n: "a" * n),
        near(limit).map(lambda n: (MARKER * (n // len(MARKER) + 1))[: max(n, 0)]),
    )


URLS = st.one_of(
    sized_text(_snapshot.MAX_ENDPOINT_URL),
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["ws", "wss", "http", "https", "javascript", "file", "WS", ""]),
        st.one_of(st.text(string.ascii_lowercase + ".-[]:@", max_size=20), st.just(MARKER)),
        texts(20),
    ),
)

ROOMS = st.builds(
    agent_pb2.RoomState,
    id=st.one_of(sized_text(_snapshot.MAX_ROOM_ID), st.sampled_from(["r1", "r2", "a/b", "x~y"])),
    type=sized_text(_snapshot.MAX_ROOM_TYPE),
    connections=st.one_of(
        st.integers(0, 2**32 - 1), near(_snapshot.MAX_CONNECTIONS), st.just(2**32 - 1)
    ),
    origin=st.sampled_from(["", "fleet", "local", "other", MARKER]),
)


@st.composite
def states(draw: st.DrawFn) -> agent_pb2.State:
    state = agent_pb2.State(
        req_id=draw(texts(16)),
        full=True,
        seq=draw(st.integers(0, 2**32 - 1)),
        hash=draw(texts(20)),
        name=draw(sized_text(_snapshot.MAX_NAME)),
        process_uid=draw(texts(30)),
        agent_version=draw(texts(12)),
        protocol_version=draw(st.integers(0, 2**32 - 1)),
        endpoint_url=draw(URLS),
        auto_create=draw(st.booleans()),
        room_types=draw(
            st.one_of(
                st.lists(sized_text(_snapshot.MAX_ROOM_TYPE), max_size=4),
                near(_snapshot.MAX_ROOM_TYPES).map(lambda n: [f"t{i}" for i in range(n)]),
            )
        ),
        status=draw(st.sampled_from(["active", "draining", "paused", "", MARKER])),
    )
    labels = draw(
        st.one_of(
            st.dictionaries(sized_text(_snapshot.MAX_LABEL_KEY), sized_text(64), max_size=4),
            near(_snapshot.MAX_LABELS).map(lambda n: {f"k{i}": "v" for i in range(n)}),
        )
    )
    state.labels.update(labels)
    if draw(st.booleans()):
        state.capacity.max_connections = draw(st.integers(-(2**31), 2**31 - 1))
    if draw(st.booleans()):
        state.capacity.max_rooms = draw(st.integers(-(2**31), 2**31 - 1))
    state.rooms.extend(draw(st.lists(ROOMS, max_size=6)))
    return state


def frames() -> st.SearchStrategy[agent_pb2.Frame]:
    return st.one_of(
        st.builds(
            lambda s: agent_pb2.Frame(state=s),
            states(),
        ),
        st.builds(
            lambda c, o, r, t: agent_pb2.Frame(
                cmd=agent_pb2.Command(cmd_id=c, op=o, room_id=r, room_type=t)
            ),
            texts(10),
            st.sampled_from(["create", "destroy", "drain", "undrain", ""]),
            texts(10),
            texts(10),
        ),
        st.builds(
            lambda c, ok, err, gone: agent_pb2.Frame(
                ack=agent_pb2.Ack(cmd_id=c, ok=ok, error=err, already_gone=gone)
            ),
            texts(10),
            st.booleans(),
            texts(10),
            st.booleans(),
        ),
        st.builds(
            lambda r, k: agent_pb2.Frame(poll=agent_pb2.Poll(req_id=r, known_hash=k)),
            texts(10),
            texts(16),
        ),
        st.just(agent_pb2.Frame()),
    )


def assert_typed(data: bytes) -> agent_pb2.Frame | None:
    try:
        frame = wire.decode_frame(data)
    except wire.WireError as exc:
        assert type(exc) in (
            wire.TruncatedFrameError,
            wire.ProtocolVersionError,
            wire.UndecodableFrameError,
            wire.FrameTooLargeError,
        )
        return None
    assert isinstance(frame, agent_pb2.Frame)
    return frame


# --- the frame codec ------------------------------------------------------------


@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x03")
@example(b"{}")
@example(b"\x03\x00\xff\xff\xff\xff")
@example(b"\x03\x00" + b"\x1a\xff\xff\xff\xff\x0f")  # a length far past the end
@example(b"\x03\x00" + b"\x0b" * 64)  # start-group tags, nested
def test_any_bytes_decode_to_a_frame_or_a_typed_wire_error(data: bytes) -> None:
    frame = assert_typed(data)
    if len(data) < 2 or data[0] != wire.PROTOCOL_MAJOR:
        assert frame is None


@given(st.binary(max_size=2048))
def test_any_body_behind_the_header_decodes_or_is_undecodable(body: bytes) -> None:
    for minor in (0, 7):
        try:
            frame = wire.decode_frame(bytes((wire.PROTOCOL_MAJOR, minor)) + body)
        except wire.UndecodableFrameError:
            continue
        assert isinstance(frame, agent_pb2.Frame)


@given(frames())
def test_every_frame_round_trips_through_the_codec(frame: agent_pb2.Frame) -> None:
    data = wire.encode_frame(frame)
    assert data[:2] == wire.HEADER
    assert wire.decode_frame(data) == frame


@given(frames(), st.data())
def test_mutated_frames_decode_or_fail_typed(frame: agent_pb2.Frame, data: st.DataObject) -> None:
    raw = bytearray(wire.encode_frame(frame))
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    assert_typed(bytes(raw))


def frame_of_size(size: int) -> bytes:
    """An encoded State frame of exactly ``size`` bytes, header included."""
    probe = len(wire.encode_frame(agent_pb2.Frame(state=agent_pb2.State(hash="x" * size))))
    filler = "x" * (2 * size - probe)  # the length prefixes are the same size near 4 MiB
    data = wire.encode_frame(agent_pb2.Frame(state=agent_pb2.State(hash=filler)))
    assert len(data) == size
    return data


def test_a_frame_of_exactly_four_mib_decodes_and_one_byte_more_is_too_large() -> None:
    assert isinstance(wire.decode_frame(frame_of_size(wire.MAX_FRAME_BYTES)), agent_pb2.Frame)
    with pytest.raises(wire.FrameTooLargeError):
        wire.decode_frame(frame_of_size(wire.MAX_FRAME_BYTES + 1))


# --- the snapshot validator ---------------------------------------------------


def assert_within_limits(snap: Snapshot, state: agent_pb2.State) -> None:
    assert len(snap.endpoint_url) <= _snapshot.MAX_ENDPOINT_URL
    parts = urlsplit(snap.endpoint_url)
    assert parts.scheme in ("ws", "wss", "http", "https") and parts.hostname
    assert len(snap.name) <= _snapshot.MAX_NAME
    assert len(snap.room_types) <= _snapshot.MAX_ROOM_TYPES
    assert all(len(t) <= _snapshot.MAX_ROOM_TYPE for t in snap.room_types)
    assert len(snap.labels) <= _snapshot.MAX_LABELS
    for key, value in snap.labels.items():
        assert len(key) <= _snapshot.MAX_LABEL_KEY and len(value) <= _snapshot.MAX_LABEL_VALUE
    assert len(snap.rooms) == len(state.rooms) <= _snapshot.MAX_ROOMS
    for room_id, room in snap.rooms.items():
        assert 0 < len(room_id) <= _snapshot.MAX_ROOM_ID
        assert len(room.type) <= _snapshot.MAX_ROOM_TYPE
        assert 0 <= room.connections <= _snapshot.MAX_CONNECTIONS
    assert snap.status in ("active", "draining")
    for limit in (snap.max_connections, snap.max_rooms):
        assert limit is None or limit >= 0
    assert snap.seq == state.seq and snap.hash == state.hash


def check_state(state: agent_pb2.State) -> Snapshot | None:
    try:
        snap = parse_snapshot(state)
    except SnapshotRejectedError as exc:
        reason = str(exc)
        assert reason and MARKER not in reason, reason
        return None
    assert_within_limits(snap, state)
    return snap


@given(states())
def test_any_state_gives_a_valid_snapshot_or_a_rejection_quoting_nothing(
    state: agent_pb2.State,
) -> None:
    check_state(state)


@given(states(), st.data())
def test_mutated_state_bytes_that_still_decode_validate_or_are_rejected(
    state: agent_pb2.State, data: st.DataObject
) -> None:
    raw = bytearray(state.SerializeToString())
    for _ in range(data.draw(st.integers(1, 6))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    try:
        mutated = agent_pb2.State.FromString(bytes(raw))
    except DecodeError:
        return  # not a State any more: inside a Frame that is an undecodable frame
    check_state(mutated)


def test_a_valid_state_passes_and_the_validator_keeps_it_whole() -> None:
    state = agent_pb2.State(
        full=True,
        seq=4,
        hash="h",
        name="eu1",
        endpoint_url="wss://eu1.example:9000",
        room_types=["match", "lobby", "match"],
        status="draining",
    )
    state.labels["region"] = "eu"
    state.capacity.max_rooms = 0
    state.rooms.add(id="a/b", type="match", connections=_snapshot.MAX_CONNECTIONS, origin="")
    snap = check_state(state)
    assert snap is not None
    assert snap.room_types == ("lobby", "match")
    assert snap.max_rooms == 0 and snap.max_connections is None
    assert snap.rooms["a/b"].local is True


def _first_failure(state: agent_pb2.State) -> str | None:
    """SPEC §4's checks one by one in their order: the reason the validator must give."""
    s = _snapshot
    rooms = list(state.rooms)
    ordered: list[tuple[bool, str]] = [
        (len(state.endpoint_url) > s.MAX_ENDPOINT_URL, "endpoint_url longer"),
        (len(state.name) > s.MAX_NAME, "name longer"),
        (len(state.room_types) > s.MAX_ROOM_TYPES, "room_types has more"),
        (any(len(t) > s.MAX_ROOM_TYPE for t in state.room_types), "room_types entry"),
        (len(rooms) > s.MAX_ROOMS, "rooms has more"),
    ]
    for failed, reason in ordered:
        if failed:
            return reason
    try:
        s._check_url(state.endpoint_url)
    except SnapshotRejectedError as exc:
        return str(exc)
    checks: list[tuple[bool, str]] = [
        (len(state.labels) > s.MAX_LABELS, "labels has more"),
        *(
            (len(k) > s.MAX_LABEL_KEY or len(v) > s.MAX_LABEL_VALUE, "label ")
            for k, v in state.labels.items()
        ),
        *(
            (
                not r.id
                or len(r.id) > s.MAX_ROOM_ID
                or len(r.type) > s.MAX_ROOM_TYPE
                or r.connections > s.MAX_CONNECTIONS,
                "room ",
            )
            for r in rooms
        ),
        (state.status not in ("active", "draining"), "status must"),
        (any(r.origin not in ("", "local", "fleet") for r in rooms), "room origin"),
        (len({r.id for r in rooms}) != len(rooms), "room id listed twice"),
        (
            (state.capacity.HasField("max_connections") and state.capacity.max_connections < 0)
            or (state.capacity.HasField("max_rooms") and state.capacity.max_rooms < 0),
            "capacity values",
        ),
    ]
    for failed, reason in checks:
        if failed:
            return reason
    return None


@given(states())
def test_the_reason_is_the_first_failing_check_in_spec_order(state: agent_pb2.State) -> None:
    expected = _first_failure(state)
    try:
        parse_snapshot(state)
    except SnapshotRejectedError as exc:
        assert expected is not None and str(exc).startswith(expected), (str(exc), expected)
    else:
        assert expected is None


def _outcome(state: agent_pb2.State, previous: Snapshot | None = None) -> Snapshot | str:
    try:
        return parse_snapshot(state, previous)
    except SnapshotRejectedError as exc:
        return str(exc)


@given(states(), states())
def test_a_previous_snapshot_changes_no_outcome(
    first: agent_pb2.State, second: agent_pb2.State
) -> None:
    previous = _outcome(first)
    if isinstance(previous, str):
        return
    assert _outcome(second, previous) == _outcome(second)
    assert _outcome(first, previous) == previous
