"""Replies in parts and deltas (docs/snapshots-at-scale.md).

A reply in parts arrives as several ``State`` frames answering one poll; each part's
rooms are parsed as it arrives (:class:`ReplyParts`) and only the parsed rooms are kept.
A delta lists the rooms added or changed since the applied snapshot and the ids gone;
:func:`apply_reply` builds the whole snapshot from it and names the rooms it touched,
so the read model reconciles only those.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from rivalis.fleet.v3 import agent_pb2

from ._agent_tokens import AgentGrant
from ._snapshot import (
    ReportedRoom,
    Snapshot,
    SnapshotRejectedError,
    StateLayout,
    build_snapshot,
    checked_fields,
    read_rooms_into,
    renewed,
    room_failure,
)

__all__ = [
    "FEATURES",
    "MAX_PARTS",
    "MAX_ROOMS_IN_PARTS",
    "DeltaBaseError",
    "PartError",
    "Reply",
    "ReplyParts",
    "apply_reply",
    "is_extended",
    "one_frame_delta",
]

FEATURES: Final = ("parts", "deltas")
"""What the orchestrator's Hello lists."""
MAX_PARTS: Final = 64
MAX_ROOMS_IN_PARTS: Final = 200_000
"""The room limit of a snapshot sent in parts or built from deltas (one frame: 50,000)."""
BATCH: Final = 1_000
"""Rooms parsed per loop turn: a 4 MiB part holds up to about 12,000 rooms with metadata
(7 µs each when their metadata is known, 50 µs when it is new, on a slow core)."""
DIFF_FROM: Final = 5_000
"""A full reply in parts with at least this many rooms (the forced full replies of a big
agent) is compared with the applied snapshot room by room, and only the rooms that
differ are reconciled."""


class PartError(Exception):
    """A part that breaks the protocol (the agent is kicked); the message says how."""


class DeltaBaseError(Exception):
    """A delta whose base is not the applied snapshot; the reply is dropped."""


@dataclass(slots=True)
class Reply:
    """A full reply or a delta whose rooms are parsed: the fields from ``header``."""

    header: agent_pb2.State
    rooms: dict[str, ReportedRoom] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    reason: str | None = None  # the first room failure; the reply is then rejected
    differing: frozenset[str] | None = None  # a full reply's ids that differ from the base

    @property
    def delta(self) -> bool:
        return bool(self.header.base_hash)

    def take(
        self, listed: Sequence[agent_pb2.RoomState], known: Mapping[str, ReportedRoom] | None
    ) -> Mapping[str, ReportedRoom]:
        """Parse some of the rooms a frame lists (nothing more once one has failed);
        returns the rooms parsed now."""
        if self.reason is not None:
            return {}
        if len(self.rooms) + len(listed) > MAX_ROOMS_IN_PARTS:
            self.reason = f"rooms has more than {MAX_ROOMS_IN_PARTS} entries"
            return {}
        if not self.rooms:
            if not read_rooms_into(listed, known, self.rooms):
                self.rooms.clear()
                self.reason = room_failure(listed, {}) or "room id listed twice"
            return self.rooms
        rooms: dict[str, ReportedRoom] = {}
        if not read_rooms_into(listed, known, rooms, self.rooms):
            self.reason = room_failure(listed, self.rooms) or "room id listed twice"
            return {}
        self.rooms.update(rooms)
        return rooms


class _Difference:
    """The ids of a full reply whose room differs from the applied snapshot's (added,
    changed or gone), gathered a batch at a time while the reply's parts are parsed, so
    the reply's apply never walks every room in one callback."""

    __slots__ = ("ids", "known", "matched")

    def __init__(self, known: Mapping[str, ReportedRoom]) -> None:
        self.known = known
        self.ids: set[str] = set()
        self.matched = 0  # listed ids the base has too

    def add(self, parsed: Mapping[str, ReportedRoom]) -> None:
        known, ids = self.known, self.ids
        matched = 0
        for room_id, room in parsed.items():
            prior = known.get(room_id)
            if prior is None:
                ids.add(room_id)
            else:
                matched += 1
                if prior != room:
                    ids.add(room_id)
        self.matched += matched

    def gone(self, reported: Mapping[str, ReportedRoom]) -> Iterator[None]:
        """Add the base's ids the reply does not list, yielding after each batch."""
        if self.matched == len(self.known):
            return
        ids = list(self.known)
        for start in range(0, len(ids), BATCH):
            self.ids.update(i for i in ids[start : start + BATCH] if i not in reported)
            if start + BATCH < len(ids):
                yield


def is_extended(state: agent_pb2.State) -> bool:
    """Whether a full State uses parts or is a delta (else the one-frame path takes it)."""
    return bool(state.parts or state.part or state.base_hash or state.removed_rooms)


class ReplyParts:
    """Collects the frames of one reply: part 1 first, then each next part in order.
    Each frame's rooms are parsed by :meth:`take`, in batches the caller may spread over
    several loop turns (:data:`BATCH` rooms each)."""

    def __init__(self, first: agent_pb2.State, known: Mapping[str, ReportedRoom] | None) -> None:
        if first.parts > MAX_PARTS:
            raise PartError(f"a reply in more than {MAX_PARTS} parts")
        if first.part > 1 or (first.parts > 1 and first.part != 1):
            raise PartError("a reply's first part is not part 1")
        self.parts = max(1, first.parts)
        self.next = 2
        self.known = known
        self.reply = Reply(first)
        self._difference = _Difference(known) if known and not first.base_hash else None

    @property
    def complete(self) -> bool:
        return self.next > self.parts

    def add(self, state: agent_pb2.State) -> None:
        """Check the next part (:class:`PartError` when it is not the one expected)."""
        first = self.reply.header
        if state.part != self.next:
            raise PartError("a part out of order")
        if (
            state.parts != first.parts
            or state.seq != first.seq
            or state.hash != first.hash
            or state.base_hash != first.base_hash
            or not state.full
        ):
            raise PartError("a part that disagrees with its first part")
        self.next += 1

    def batches(self, state: agent_pb2.State) -> Iterator[None]:
        """Parse ``state``'s rooms, yielding after each :data:`BATCH` of them."""
        listed = state.rooms
        reply, difference = self.reply, self._difference
        for start in range(0, len(listed), BATCH):
            parsed = reply.take(listed[start : start + BATCH], self.known)
            if difference is not None:
                difference.add(parsed)
            if start + BATCH < len(listed):
                yield
        reply.removed.extend(state.removed_rooms)
        if (
            difference is not None
            and self.complete
            and reply.reason is None
            and len(reply.rooms) >= DIFF_FROM
        ):
            yield from difference.gone(reply.rooms)
            reply.differing = frozenset(difference.ids)


def one_frame_delta(
    state: agent_pb2.State, known: Mapping[str, ReportedRoom] | None
) -> Reply | None:
    """The usual delta, in one frame with at most :data:`BATCH` rooms, parsed at once;
    None for anything else (parts, more rooms, not a delta), which :class:`ReplyParts`
    takes."""
    if not state.base_hash or state.parts or state.part:
        return None
    listed = state.rooms
    if len(listed) > BATCH:
        return None
    reply = Reply(state)
    reply.take(listed, known)
    reply.removed.extend(state.removed_rooms)
    return reply


def apply_reply(
    reply: Reply,
    previous: Snapshot | None,
    grant: AgentGrant | None,
    layout: StateLayout | None = None,
) -> tuple[Snapshot, frozenset[str] | None]:
    """The snapshot a reply makes, and the ids it touched (None: every room).

    A delta that passes every check takes ``previous``'s room map over, changed in
    place: the caller must apply the snapshot it gets (a stale ``seq`` is checked before).
    A delta in one frame whose ``layout`` shows the applied snapshot's head takes its
    fields over (:func:`~._snapshot.renewed`).
    :class:`SnapshotRejectedError` when a check fails (the reason names it),
    :class:`DeltaBaseError` when a delta is not based on ``previous``; neither changes
    ``previous``.
    """
    header = reply.header
    if layout is not None:  # a delta's rooms are not all the rooms: never a rooms key
        layout = layout._replace(rooms=None)
    same = previous if layout is not None and previous is not None else None
    if same is not None and layout is not None and same.head == layout.head:
        labels = same.labels
    else:
        same = None
        labels = checked_fields(header, previous, room_limit=None)
    if reply.reason is not None:
        raise SnapshotRejectedError(reply.reason)
    if not reply.delta:
        if reply.removed:
            raise SnapshotRejectedError("removed_rooms only in a delta")
        snapshot = build_snapshot(header, reply.rooms, labels, grant, layout)
        if previous is None or len(reply.rooms) < DIFF_FROM:
            return snapshot, None
        if reply.differing is not None:
            return snapshot, reply.differing
        return snapshot, _differing(previous.rooms, reply.rooms)
    if previous is None or previous.hash != header.base_hash:
        raise DeltaBaseError("base is not the applied snapshot")
    rooms = previous.rooms
    if not isinstance(rooms, dict):
        rooms = dict(rooms)
    _check_delta_rooms(reply, rooms)
    if same is not None and layout is not None:
        snapshot = renewed(same, header, rooms, layout)
    else:
        snapshot = build_snapshot(header, rooms, labels, grant, layout)
    # Every check has passed: the base's room map becomes the new snapshot's, changed in
    # place (O(rooms in the delta); a copy would cost O(rooms on the instance)). The
    # caller applies the snapshot it gets: the base is not used again.
    for room_id in reply.removed:
        rooms.pop(room_id, None)
    rooms.update(reply.rooms)
    touched = frozenset(reply.rooms).union(reply.removed)
    return snapshot, touched


def _check_delta_rooms(reply: Reply, rooms: Mapping[str, ReportedRoom]) -> None:
    """Refuse a delta that both changes and removes a room, or that would take the base's
    ``rooms`` past :data:`MAX_ROOMS_IN_PARTS`."""
    gone = 0
    for room_id in set(reply.removed):  # an id the base does not list (made and gone since)
        if room_id in reply.rooms:
            raise SnapshotRejectedError("a room both changed and removed")
        gone += room_id in rooms
    added = sum(1 for room_id in reply.rooms if room_id not in rooms)
    if len(rooms) - gone + added > MAX_ROOMS_IN_PARTS:
        raise SnapshotRejectedError(f"rooms has more than {MAX_ROOMS_IN_PARTS} entries")


def _differing(
    applied: Mapping[str, ReportedRoom], reported: Mapping[str, ReportedRoom]
) -> frozenset[str]:
    """The ids whose room differs between two snapshots' rooms (also added or gone)."""
    touched = {room_id for room_id, room in reported.items() if applied.get(room_id) != room}
    touched.update(room_id for room_id in applied if room_id not in reported)
    return frozenset(touched)
