"""Validation of full State replies and their conversion to an immutable snapshot (SPEC §4).

Checks run in the SPEC's order and the first failure is the reason, which names the
field and the limit and never quotes agent data. Beyond the SPEC's list, an empty room
id (unaddressable) and a room id listed twice (ambiguous) are refused too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from rivalis.fleet.v3 import agent_pb2

from fleet_agent.wire import (
    MAX_ACCEPTED_RESERVATIONS,
    MAX_METADATA_BYTES,
    MAX_RESERVATION_ID,
    canonical_json,
    canonical_text,
    parse_object_text,
)

# The SPEC §4 limits are defined in fleet_agent.wire, shared with the agent's option
# checks; they are re-exported here next to the validator that applies them.
from fleet_agent.wire import MAX_CONNECTIONS as MAX_CONNECTIONS
from fleet_agent.wire import MAX_ENDPOINT_URL as MAX_ENDPOINT_URL
from fleet_agent.wire import MAX_LABEL_KEY as MAX_LABEL_KEY
from fleet_agent.wire import MAX_LABEL_VALUE as MAX_LABEL_VALUE
from fleet_agent.wire import MAX_LABELS as MAX_LABELS
from fleet_agent.wire import MAX_NAME as MAX_NAME
from fleet_agent.wire import MAX_ROOM_ID as MAX_ROOM_ID
from fleet_agent.wire import MAX_ROOM_TYPE as MAX_ROOM_TYPE
from fleet_agent.wire import MAX_ROOM_TYPES as MAX_ROOM_TYPES
from fleet_agent.wire import MAX_ROOMS as MAX_ROOMS
from fleet_agent.wire import SNAPSHOT_STATUSES as _STATUSES
from fleet_agent.wire import URL_SCHEMES as _SCHEMES

from ._agent_tokens import AgentGrant, binding_violation
from ._state_layout import RoomsKey, StateLayout

__all__ = [
    "ReportedRoom",
    "RoomsKey",
    "Snapshot",
    "SnapshotRejectedError",
    "StateLayout",
    "build_snapshot",
    "canonical_metadata",
    "checked_fields",
    "parse_snapshot",
    "read_rooms_into",
    "renewed",
    "room_failure",
]

_ORIGINS: Final = {"": True, "local": True, "fleet": False}  # origin -> local


class SnapshotRejectedError(ValueError):
    """A full State that fails validation; the message is the reason."""


class ReportedRoom(NamedTuple):
    """One room as its agent reported it (a tuple: cheap to build, and of atoms only,
    so the garbage collector stops tracking it)."""

    type: str
    connections: int
    local: bool
    metadata: str = ""  # canonical JSON object text; "" = none
    max_connections: int | None = None
    locked: bool = False


@functools.lru_cache(maxsize=4096)
def canonical_metadata(text: str) -> str | None:
    """The canonical text of a room's reported metadata (docs/matchmaking.md §1), or None
    when it is not a JSON object within the limit; computed once per distinct text. A
    flat object of strings, integers, booleans and nulls (the usual metadata) is written
    back without the normalizing copy; already canonical, ``text`` itself is returned."""
    try:
        value = parse_object_text(text, MAX_METADATA_BYTES, "metadata")
        if all(type(item) in _PLAIN for item in value.values()):
            canonical = canonical_text(value)
            if canonical == text:
                return text
        else:
            canonical = canonical_json(value)
    except (ValueError, TypeError, RecursionError):
        return None
    return canonical if len(canonical.encode()) <= MAX_METADATA_BYTES else None


_PLAIN: Final = frozenset((str, int, bool, type(None)))


def _room_extras(
    room: agent_pb2.RoomState, known: str | None = None
) -> tuple[str, int | None, bool] | None:
    """A room's matchmaking fields, or None when one is off. ``known`` is the canonical
    metadata the room had in the applied snapshot: the same text is taken as it is."""
    metadata = room.metadata
    if metadata and metadata != known:
        canonical = canonical_metadata(metadata)
        if canonical is None:
            return None
        metadata = canonical
    maximum = room.max_connections if room.HasField("max_connections") else None
    if maximum is not None and maximum > MAX_CONNECTIONS:
        return None
    return metadata, maximum, room.locked


class Snapshot(NamedTuple):
    """An instance's applied reply, validated (a tuple: built in one step, which matters
    at one per changed reply; read by field name only)."""

    name: str
    process_uid: str
    agent_version: str
    protocol_version: int
    endpoint_url: str
    labels: Mapping[str, str]
    max_connections: int | None
    max_rooms: int | None
    auto_create: bool
    room_types: tuple[str, ...]
    rooms: Mapping[str, ReportedRoom]
    status: str
    hash: str
    seq: int
    accepted_reservations: tuple[str, ...] = ()
    rooms_key: RoomsKey = None  # of a one-frame reply: see ._state_layout
    head: bytes | None = None  # fields 5–13 as sent in one frame: see ._state_layout


_HEAD_FIELDS: Final = Snapshot._fields.index("rooms")  # name to room_types: what a head sets


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise SnapshotRejectedError("endpoint_url is not a valid URL") from None
    if parts.scheme not in _SCHEMES:
        raise SnapshotRejectedError("endpoint_url scheme must be ws, wss, http or https")
    if not host:
        raise SnapshotRejectedError("endpoint_url must be absolute with a host")


def _read_rooms(
    state: agent_pb2.State, known: Mapping[str, ReportedRoom] | None = None
) -> dict[str, ReportedRoom] | None:
    """The rooms in one pass, or None as soon as one is off (then checked in order).
    ``known`` are the applied snapshot's rooms: unchanged metadata is not parsed again."""
    if len(state.rooms) > MAX_ROOMS:
        return None
    rooms: dict[str, ReportedRoom] = {}
    return rooms if read_rooms_into(state.rooms, known, rooms) else None


def read_rooms_into(
    listed: Iterable[agent_pb2.RoomState],
    known: Mapping[str, ReportedRoom] | None,
    rooms: dict[str, ReportedRoom],
    seen: Mapping[str, ReportedRoom] | None = None,
) -> bool:
    """Add the ``listed`` rooms to ``rooms`` in one pass; False as soon as one is off
    (its reason is then :func:`room_failure`'s) or an id is listed twice (in ``rooms``
    or in ``seen``, the rooms of earlier parts)."""
    origins = _ORIGINS
    earlier = seen if seen is not None else {}
    new = tuple.__new__
    for room in listed:
        room_id = room.id
        room_type = room.type
        connections = room.connections
        local = origins.get(room.origin)
        if (
            local is None
            or not room_id
            or len(room_id) > MAX_ROOM_ID
            or len(room_type) > MAX_ROOM_TYPE
            or connections > MAX_CONNECTIONS
            or room_id in rooms
            or room_id in earlier
        ):
            return False
        if room.metadata or room.locked or room.HasField("max_connections"):
            prior = known.get(room_id) if known is not None else None
            extras = _room_extras(room, prior.metadata if prior is not None else None)
            if extras is None:
                return False
            rooms[room_id] = new(ReportedRoom, (room_type, connections, local, *extras))
        else:  # ReportedRoom(room_type, connections, local), without its Python __new__
            rooms[room_id] = new(ReportedRoom, (room_type, connections, local, "", None, False))
    return True


def room_failure(
    listed: Iterable[agent_pb2.RoomState], seen: Mapping[str, ReportedRoom]
) -> str | None:
    """The first SPEC §4 failure among ``listed`` rooms (``seen`` are ids listed before)."""
    ids: set[str] = set()
    for room in listed:
        reason = _room_reason(room)
        if reason is None and _ORIGINS.get(room.origin) is None:
            reason = "room origin must be fleet or local"
        if reason is None and (room.id in seen or room.id in ids):
            reason = "room id listed twice"
        if reason is not None:
            return reason
        ids.add(room.id)
    return None


def parse_snapshot(
    state: agent_pb2.State,
    previous: Snapshot | None = None,
    grant: AgentGrant | None = None,
    layout: StateLayout | None = None,
) -> Snapshot:
    """Validate ``state`` (a full reply in one frame) and return it as a :class:`Snapshot`.

    Well-formed rooms are read in one pass; when anything in that pass is off, the
    checks run again in the SPEC's order so the reason is the first failure. With
    ``previous``, the instance's applied snapshot, an unchanged endpoint and unchanged
    labels are not checked again and the labels mapping is shared. With the frame's
    ``layout`` (:func:`~._state_layout.state_layout`), rooms sent as the same bytes are
    taken over without being read, and so are the fields of a head sent as the same
    bytes (:func:`renewed`). With ``grant`` (the agent token the agent joined with) the
    name and labels must carry what it binds.
    """
    key = layout.rooms if layout is not None else None
    if key is not None and previous is not None and previous.rooms_key == key:
        rooms: Mapping[str, ReportedRoom] | None = previous.rooms
    else:
        rooms = _read_rooms(state, previous.rooms if previous is not None else None)
    if previous is not None and layout is not None and previous.head == layout.head:
        if rooms is None:
            if len(state.rooms) > MAX_ROOMS:
                raise SnapshotRejectedError(f"rooms has more than {MAX_ROOMS} entries")
            rooms = _checked_rooms(state)
        return renewed(previous, state, rooms, layout)
    labels = checked_fields(state, previous, room_limit=MAX_ROOMS)
    if rooms is None:
        rooms = _checked_rooms(state)
    return build_snapshot(state, rooms, labels, grant, layout)


def renewed(
    previous: Snapshot,
    state: agent_pb2.State,
    rooms: Mapping[str, ReportedRoom],
    layout: StateLayout,
) -> Snapshot:
    """The snapshot of a reply whose head (fields 5–13) was sent as the same bytes as
    ``previous``'s: those fields are ``previous``'s, checked (the agent token's binding
    too: an instance keeps the token it joined with) and not read again; the status and
    accepted reservations are read and checked (the rooms by the caller)."""
    status = state.status
    if status not in _STATUSES:
        raise SnapshotRejectedError("status must be active or draining")
    accepted = tuple(state.accepted_reservations) if layout.accepted else ()
    if accepted:
        _check_accepted(accepted)
    after = (status, state.hash, state.seq, accepted, layout.rooms, previous.head)
    return tuple.__new__(Snapshot, (*previous[:_HEAD_FIELDS], rooms, *after))


def checked_fields(
    state: agent_pb2.State, previous: Snapshot | None, *, room_limit: int | None
) -> Mapping[str, str]:
    """Check every non-room field but the status and capacity, in the SPEC's order;
    returns the labels (``previous``'s mapping when unchanged). ``room_limit`` None: the
    room count is checked elsewhere (a reply in parts)."""
    labels: Mapping[str, str] = dict(state.labels)
    if previous is not None and labels == previous.labels:
        labels = previous.labels
        _check_fields(state, previous.endpoint_url, room_limit, check_labels=False)
    else:
        _check_fields(state, previous.endpoint_url if previous is not None else None, room_limit)
    return labels


def build_snapshot(
    state: agent_pb2.State,
    rooms: Mapping[str, ReportedRoom],
    labels: Mapping[str, str],
    grant: AgentGrant | None,
    layout: StateLayout | None = None,
) -> Snapshot:
    """The :class:`Snapshot` of checked ``rooms`` and fields, after the last checks."""
    if state.status not in _STATUSES:
        raise SnapshotRejectedError("status must be active or draining")
    capacity = state.capacity
    max_connections = capacity.max_connections if capacity.HasField("max_connections") else None
    max_rooms = capacity.max_rooms if capacity.HasField("max_rooms") else None
    if (max_connections is not None and max_connections < 0) or (
        max_rooms is not None and max_rooms < 0
    ):
        raise SnapshotRejectedError("capacity values must be >= 0")
    accepted = tuple(state.accepted_reservations)
    if accepted:
        _check_accepted(accepted)
    if grant is not None:
        violation = binding_violation(grant, state.name, labels)
        if violation is not None:
            raise SnapshotRejectedError(violation)
    return Snapshot(
        name=state.name,
        process_uid=state.process_uid,
        agent_version=state.agent_version,
        protocol_version=state.protocol_version,
        endpoint_url=state.endpoint_url,
        labels=labels,
        max_connections=max_connections,
        max_rooms=max_rooms,
        auto_create=state.auto_create,
        room_types=tuple(sorted(set(state.room_types))),
        rooms=rooms,
        status=state.status,
        hash=state.hash,
        seq=state.seq,
        accepted_reservations=accepted,
        rooms_key=layout.rooms if layout is not None else None,
        head=layout.head if layout is not None else None,
    )


def _check_accepted(accepted: tuple[str, ...]) -> None:
    if len(accepted) > MAX_ACCEPTED_RESERVATIONS:
        raise SnapshotRejectedError(
            f"accepted_reservations has more than {MAX_ACCEPTED_RESERVATIONS} entries"
        )
    for reservation_id in accepted:
        if not reservation_id or len(reservation_id) > MAX_RESERVATION_ID:
            raise SnapshotRejectedError(
                f"accepted_reservations entry empty or longer than {MAX_RESERVATION_ID} chars"
            )


def _check_fields(
    state: agent_pb2.State,
    checked_url: str | None,
    room_limit: int | None,
    *,
    check_labels: bool = True,
) -> None:
    """Every check but the rooms', in the SPEC's order (room checks sit in between);
    ``checked_url`` passed them before, and labels are skipped when already checked."""
    if len(state.endpoint_url) > MAX_ENDPOINT_URL:
        raise SnapshotRejectedError(f"endpoint_url longer than {MAX_ENDPOINT_URL} chars")
    if len(state.name) > MAX_NAME:
        raise SnapshotRejectedError(f"name longer than {MAX_NAME} chars")
    if len(state.room_types) > MAX_ROOM_TYPES:
        raise SnapshotRejectedError(f"room_types has more than {MAX_ROOM_TYPES} entries")
    for room_type in state.room_types:
        if len(room_type) > MAX_ROOM_TYPE:
            raise SnapshotRejectedError(f"room_types entry longer than {MAX_ROOM_TYPE} chars")
    if room_limit is not None and len(state.rooms) > room_limit:
        raise SnapshotRejectedError(f"rooms has more than {room_limit} entries")
    if state.endpoint_url != checked_url:
        _check_url(state.endpoint_url)
    if not check_labels:
        return
    labels = state.labels
    if len(labels) > MAX_LABELS:
        raise SnapshotRejectedError(f"labels has more than {MAX_LABELS} entries")
    for key, value in labels.items():
        if len(key) > MAX_LABEL_KEY:
            raise SnapshotRejectedError(f"label key longer than {MAX_LABEL_KEY} chars")
        if len(value) > MAX_LABEL_VALUE:
            raise SnapshotRejectedError(f"label value longer than {MAX_LABEL_VALUE} chars")


def _room_reason(room: agent_pb2.RoomState) -> str | None:
    """The first of one room's own SPEC §4 failures, or None."""
    if not room.id:
        return "room id is empty"
    if len(room.id) > MAX_ROOM_ID:
        return f"room id longer than {MAX_ROOM_ID} chars"
    if len(room.type) > MAX_ROOM_TYPE:
        return f"room type longer than {MAX_ROOM_TYPE} chars"
    if room.connections > MAX_CONNECTIONS:
        return f"room connections above {MAX_CONNECTIONS}"
    if room.metadata and canonical_metadata(room.metadata) is None:
        return f"room metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
    if room.HasField("max_connections") and room.max_connections > MAX_CONNECTIONS:
        return f"room max_connections above {MAX_CONNECTIONS}"
    return None


def _checked_rooms(state: agent_pb2.State) -> dict[str, ReportedRoom]:
    """The rooms, checked one rule at a time in the SPEC's order (after the fields)."""
    for room in state.rooms:
        reason = _room_reason(room)
        if reason is not None:
            raise SnapshotRejectedError(reason)
    if state.status not in _STATUSES:
        raise SnapshotRejectedError("status must be active or draining")
    rooms: dict[str, ReportedRoom] = {}
    for room in state.rooms:
        local = _ORIGINS.get(room.origin)
        if local is None:
            raise SnapshotRejectedError("room origin must be fleet or local")
        if room.id in rooms:
            raise SnapshotRejectedError("room id listed twice")
        extras = _room_extras(room)
        assert extras is not None  # checked above
        rooms[room.id] = ReportedRoom(room.type, room.connections, local, *extras)
    return rooms
