"""The agent's snapshot: what it reports in reply to each Poll.

A full ``State`` carries the identity (name, process uid, versions, endpoint, labels,
capacity, auto_create), the room types, every room with its origin, metadata, seats and
lock, the status and the accepted seat reservations; a hash-only ``State`` carries only
``req_id``, ``full=false``, ``seq`` and the hash. The hash is
:func:`fleet_agent.wire.snapshot_hash`.

Each room is kept as its row, its hash text and its encoded wire entry
(:class:`~fleet_agent._room_entries.RoomEntries`), remade only when the room changes. Over
a :class:`RoomManager` the snapshot learns which rooms changed from the manager itself
(:meth:`RoomManager._track`): a poll after no change reads no room at all, and a poll
after some reads only those. Over any other :class:`RoomHost` each poll lists the rooms
and compares them with the kept rows. Replies are written as bytes
(:func:`fleet_agent.wire.state_frame`): the identity is encoded once, the hash part once
per change, a full reply joins the kept room entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final, Literal, TypeAlias

from rivalis.fleet.v3 import agent_pb2

from . import _reply_parts, wire
from ._host import RoomHost, RoomView
from ._options import Capacity
from ._reply_parts import DELTAS, PARTS, delta_fields, frames_of
from ._room_entries import RoomChanges, RoomEntries
from ._rooms import Room, RoomManager
from ._seats import SeatLedger

__all__ = ["FLEET", "LOCAL", "Identity", "Snapshot", "SnapshotStatus"]

SnapshotStatus: TypeAlias = Literal["active", "draining"]
FLEET: Final = "fleet"
LOCAL: Final = "local"

_RoomRow: TypeAlias = tuple[str, str, int, str, str, int | None, bool]
"""(id, type, connections, origin, metadata text, max_connections, locked)."""
_BY_ID: Final = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Identity:
    """The parts of the snapshot fixed for the agent's lifetime."""

    name: str
    process_uid: str
    agent_version: str
    endpoint_url: str
    labels: Mapping[str, str]
    capacity: Capacity = field(default_factory=Capacity)
    auto_create: bool = True


@dataclass(slots=True)
class _Capture:
    """What one version of the snapshot reports, with its encoded parts."""

    room_types: tuple[str, ...]
    status: SnapshotStatus
    accepted: tuple[str, ...]
    version: int
    """:attr:`RoomEntries.version` when it was taken."""
    hash: str
    hash_head: bytes
    """The serialized ``hash`` field: the whole of a hash-only reply after ``seq``."""
    full_head: bytes = b""
    """Fields 4 to 13 of a full reply (hash, identity, room types); made at first use."""
    tail: bytes = b""
    """Fields 15 and 16 (status, accepted reservations); made at first use."""
    rooms: bytes = b""
    """Every room entry, joined in id order; made at first use."""


def _view_row(view: RoomView, origin: str) -> _RoomRow:
    """The row of a room view that is not a :class:`Room`: its members, coerced."""
    max_connections = getattr(view, "max_connections", None)
    return (
        str(view.id),
        str(view.type),
        max(0, int(view.connections)),
        origin,
        str(getattr(view, "metadata_text", "") or ""),
        None if max_connections is None else int(max_connections),
        bool(getattr(view, "locked", False)),
    )


def _tracks(host: RoomHost) -> bool:
    """Whether ``host`` reports its changes: a :class:`RoomManager` listing its own rooms."""
    return isinstance(host, RoomManager) and type(host).rooms is RoomManager.rooms


_PLAIN_CONNECTIONS: Final[object] = Room.__dict__["connections"]


class Snapshot:
    """Builds the replies of one agent: status, provenance marks, seq and the hash cache.

    ``seats`` is the agent's seat ledger, whose unexpired accepted reservation ids each
    reply reports.
    """

    def __init__(self, identity: Identity, seats: SeatLedger | None = None) -> None:
        self.identity = identity
        self.status: SnapshotStatus = "active"
        self.seq = 0
        self._seats = seats
        self._fleet_rooms: set[str] = set()
        self._last: _Capture | None = None
        self._rooms = RoomEntries()
        self._host: RoomManager | None = None  # the tracked host
        self._pending: set[str] | None = None  # ids the tracked host changed since
        self._volatile: set[str] = set()  # tracked rooms whose connections is computed
        self._identity_fields = _identity_fields(identity)
        self.features: frozenset[str] = frozenset()
        """What the connection's orchestrator accepts (``Hello.features``)."""
        self._sent: _Capture | None = None  # the last full reply or delta sent

    # -- provenance ------------------------------------------------------------------

    def mark_fleet(self, room_id: str) -> None:
        """Remember that the fleet created ``room_id`` (reported with origin ``fleet``)."""
        self._fleet_rooms.add(room_id)
        if self._pending is not None:
            self._pending.add(room_id)

    def forget(self, room_id: str) -> None:
        """Drop the mark: a later room with this id is ``local``."""
        self._fleet_rooms.discard(room_id)
        if self._pending is not None:
            self._pending.add(room_id)

    def origin(self, room_id: str) -> str:
        return FLEET if room_id in self._fleet_rooms else LOCAL

    # -- replies ---------------------------------------------------------------------

    def reset_seq(self, features: Iterable[str] = ()) -> None:
        """A new connection, whose orchestrator accepts ``features``: the next reply has
        seq 1 and is full."""
        self.seq = 0
        self.features = frozenset(features)
        self._sent = None

    def current_hash(self, host: RoomHost) -> str:
        """The hash of what the host holds now."""
        return self._capture(host).hash

    @property
    def version(self) -> int:
        """Bumped by every change of a room (see :meth:`changes_since`)."""
        return self._rooms.version

    def changes_since(self, version: int) -> RoomChanges | None:
        """The rooms changed and removed between ``version`` and the last reply (or
        :meth:`current_hash`); ``None`` when that is too far back to tell."""
        return self._rooms.changes_since(version)

    def reply_frame(self, host: RoomHost, req_id: str, known_hash: str | None) -> bytes:
        """The encoded ``State`` answering a Poll: full unless ``known_hash`` equals the
        current hash (:meth:`is_full` tells which from the bytes)."""
        capture = self._capture(host)
        self.seq += 1
        if known_hash is not None and known_hash == capture.hash:
            return wire.state_frame(req_id, self.seq, capture.hash_head)
        head, tail = self._full_parts(capture)
        return wire.state_frame(req_id, self.seq, head, (self._joined(capture),), tail, full=True)

    def _joined(self, capture: _Capture) -> bytes:
        """Every room entry of ``capture``, joined once."""
        if not capture.rooms and self._rooms.entries:
            capture.rooms = b"".join(self._rooms.entries)
        return capture.rooms

    def reply_frames(self, host: RoomHost, req_id: str, known_hash: str | None) -> list[bytes]:
        """The frames answering a Poll: as :meth:`reply_frame`, or with the features the
        orchestrator accepts, a delta and/or a reply in parts (docs/snapshots-at-scale.md)."""
        if not self.features:
            return [self.reply_frame(host, req_id, known_hash)]
        capture = self._capture(host)
        sent, self._sent = self._sent, capture
        if known_hash is not None and known_hash == capture.hash:
            self._sent = sent
            self.seq += 1
            return [wire.state_frame(req_id, self.seq, capture.hash_head)]
        head, tail = self._full_parts(capture)
        self.seq += 1
        base, items = self._delta(sent, known_hash)
        if not base:
            items = [self._joined(capture)]
            if PARTS in self.features and len(items[0]) + len(head) + len(tail) > _budget():
                items = self._rooms.entries  # cut at room boundaries
        if PARTS not in self.features:
            return [wire.state_frame(req_id, self.seq, head, items, tail + base, full=True)]
        return frames_of(req_id, self.seq, head, capture.hash_head, items, tail, base)

    def _delta(self, sent: _Capture | None, known_hash: str | None) -> tuple[bytes, list[bytes]]:
        """The ``base_hash`` field and the entries of a delta against ``sent``, when the
        orchestrator holds it (``known_hash``); ``b""`` when a full reply is due."""
        if DELTAS not in self.features or sent is None or known_hash != sent.hash:
            return b"", []
        changes = self._rooms.changes_since(sent.version)
        if changes is None:
            return b"", []
        base, items = delta_fields(sent.hash, changes.removed)
        items[:0] = map(self._rooms.entry, changes.changed)
        return base, items

    def _full_parts(self, capture: _Capture) -> tuple[bytes, bytes]:
        """The fields of a full reply before and after the rooms, made once per capture."""
        if not capture.full_head:
            capture.full_head = capture.hash_head + self._identity_fields + _types(capture)
            capture.tail = agent_pb2.State(
                status=capture.status, accepted_reservations=capture.accepted
            ).SerializeToString()
        return capture.full_head, capture.tail

    def reply(self, host: RoomHost, req_id: str, known_hash: str | None) -> agent_pb2.State:
        """:meth:`reply_frame` as a message."""
        return wire.decode_frame(self.reply_frame(host, req_id, known_hash)).state

    # -- capture ---------------------------------------------------------------------

    def _capture(self, host: RoomHost) -> _Capture:
        last, manager = self._last, self._host
        if (
            host is manager
            and manager is not None
            and not self._pending
            and not self._volatile
            and last is not None
            and last.status == self.status
            and last.room_types is manager._types
            and last.accepted is (self._seats.accepted() if self._seats is not None else ())
        ):
            return last  # a RoomManager that reported no change since: nothing to read
        rooms = self._rooms
        if _tracks(host):
            assert isinstance(host, RoomManager)
            if host is not self._host:
                self._attach(host)
            if self._pending or self._volatile:
                self._apply(host)
        else:
            self._host = self._pending = None
            rooms.replace(self._rows(host))
            if self._fleet_rooms:
                self._fleet_rooms.intersection_update(rooms.rows)
        room_types = tuple(host.room_types())
        accepted = self._seats.accepted() if self._seats is not None else ()
        if (
            last is not None
            and last.version == rooms.version
            and last.status == self.status
            and (last.room_types is room_types or last.room_types == room_types)
            and (last.accepted is accepted or last.accepted == accepted)
        ):
            return last
        digest = self._hash(tuple(sorted(room_types)), accepted)
        raw = digest.encode()
        head = b"\x22" + wire.varint(len(raw)) + raw
        self._last = _Capture(room_types, self.status, accepted, rooms.version, digest, head)
        return self._last

    def _attach(self, host: RoomManager) -> None:
        """Start reading ``host``'s changes: every room it holds counts as changed."""
        self._host = host
        self._pending = host._track(self)
        self._pending.update(host._rooms)
        self._pending.update(self._rooms.rows)
        self._volatile.clear()

    def _apply(self, host: RoomManager) -> None:
        """Bring the kept rooms up to date with the ids the host reported changed, and
        with the rooms whose ``connections`` is computed (read at every poll)."""
        pending = self._pending
        assert pending is not None
        changed = list(pending)
        pending.clear()
        if self._volatile:
            changed += self._volatile
        live, rooms, fleet, volatile = host._rooms, self._rooms, self._fleet_rooms, self._volatile
        for room_id in changed:
            room = live.get(room_id)
            if room is None:
                rooms.remove(room_id)
                fleet.discard(room_id)
                volatile.discard(room_id)
                continue
            conns = room.connections
            if getattr(type(room), "connections", None) is not _PLAIN_CONNECTIONS:
                volatile.add(room_id)  # a subclass computes it: no setter tells a change
            if type(conns) is not int or conns < 0:  # an overriding property
                conns = max(0, int(conns))
            origin = FLEET if room_id in fleet else LOCAL
            rooms.put((room_id, room.type, conns, origin, *room._matchmaking))

    def _rows(self, host: RoomHost) -> list[_RoomRow]:
        """The rooms of a host that does not report its changes, sorted by id: a
        :class:`Room` (whose setters validate) is read without coercions."""
        fleet = self._fleet_rooms
        rows: list[_RoomRow] = []
        append = rows.append
        for view in host.rooms():
            if isinstance(view, Room):
                rid, conns = view.id, view.connections
                if type(conns) is not int or conns < 0:  # an overriding property
                    conns = max(0, int(conns))
                append(
                    (rid, view.type, conns, FLEET if rid in fleet else LOCAL, *view._matchmaking)
                )
            else:
                append(_view_row(view, self.origin(str(view.id))))
        rows.sort(key=_BY_ID)
        return rows

    def _hash(self, room_types: tuple[str, ...], accepted: tuple[str, ...]) -> str:
        """The snapshot hash over the kept texts of the rooms."""
        ident = self.identity
        return wire.snapshot_hash(
            name=ident.name,
            process_uid=ident.process_uid,
            agent_version=ident.agent_version,
            protocol_version=wire.PROTOCOL_MAJOR,
            endpoint_url=ident.endpoint_url,
            labels=ident.labels,
            max_connections=ident.capacity.max_connections,
            max_rooms=ident.capacity.max_rooms,
            auto_create=ident.auto_create,
            room_types=room_types,
            rooms=(),
            status=self.status,
            accepted_reservations=accepted,
            entries=self._rooms.texts,
        )


def _identity_fields(ident: Identity) -> bytes:
    """Fields 5 to 12 of a full State (name to auto_create), serialized once."""
    state = agent_pb2.State(
        name=ident.name,
        process_uid=ident.process_uid,
        agent_version=ident.agent_version,
        protocol_version=wire.PROTOCOL_MAJOR,
        endpoint_url=ident.endpoint_url,
        labels=dict(ident.labels),
        auto_create=ident.auto_create,
    )
    if ident.capacity.max_connections is not None:
        state.capacity.max_connections = ident.capacity.max_connections
    if ident.capacity.max_rooms is not None:
        state.capacity.max_rooms = ident.capacity.max_rooms
    return state.SerializeToString()


def _types(capture: _Capture) -> bytes:
    """Field 13 (room_types, sorted) of a full State."""
    return agent_pb2.State(room_types=sorted(capture.room_types)).SerializeToString()


def _budget() -> int:
    return _reply_parts.PART_BUDGET
