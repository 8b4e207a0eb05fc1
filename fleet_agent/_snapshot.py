"""The agent's snapshot: what it reports in reply to each Poll.

A full ``State`` carries the identity (name, process uid, versions, endpoint, labels,
capacity, auto_create), the room types, every room with its origin, metadata, seats and
lock, the status and the accepted seat reservations; a hash-only ``State`` carries only
``req_id``, ``full=false``, ``seq`` and the hash. The hash is
:func:`fleet_agent.wire.snapshot_hash`, recomputed only when something it covers changed,
from the cached canonical texts of the rooms that did not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final, Literal, TypeAlias

from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._host import RoomHost, RoomView
from ._options import Capacity
from ._rooms import Room
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


@dataclass(frozen=True, slots=True)
class _Capture:
    room_types: tuple[str, ...]
    rooms: tuple[_RoomRow, ...]
    status: SnapshotStatus
    accepted: tuple[str, ...]
    hash: str


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
        self._entries: dict[wire.RoomRow, str] = {}

    # -- provenance ------------------------------------------------------------------

    def mark_fleet(self, room_id: str) -> None:
        """Remember that the fleet created ``room_id`` (reported with origin ``fleet``)."""
        self._fleet_rooms.add(room_id)

    def forget(self, room_id: str) -> None:
        """Drop the mark: a later room with this id is ``local``."""
        self._fleet_rooms.discard(room_id)

    def origin(self, room_id: str) -> str:
        return FLEET if room_id in self._fleet_rooms else LOCAL

    # -- replies ---------------------------------------------------------------------

    def reset_seq(self) -> None:
        """A new connection: the next reply has seq 1."""
        self.seq = 0

    def current_hash(self, host: RoomHost) -> str:
        """The hash of what the host holds now."""
        return self._capture(host).hash

    def reply(self, host: RoomHost, req_id: str, known_hash: str | None) -> agent_pb2.State:
        """The ``State`` answering a Poll: full unless ``known_hash`` equals the current hash."""
        capture = self._capture(host)
        self.seq += 1
        if known_hash is not None and known_hash == capture.hash:
            return agent_pb2.State(req_id=req_id, full=False, seq=self.seq, hash=capture.hash)
        ident = self.identity
        state = agent_pb2.State(
            req_id=req_id,
            full=True,
            seq=self.seq,
            hash=capture.hash,
            name=ident.name,
            process_uid=ident.process_uid,
            agent_version=ident.agent_version,
            protocol_version=wire.PROTOCOL_MAJOR,
            endpoint_url=ident.endpoint_url,
            labels=dict(ident.labels),
            auto_create=ident.auto_create,
            room_types=capture.room_types,
            rooms=[
                agent_pb2.RoomState(
                    id=rid,
                    type=rtype,
                    connections=conns,
                    origin=origin,
                    metadata=metadata,
                    max_connections=max_connections,
                    locked=locked,
                )
                for rid, rtype, conns, origin, metadata, max_connections, locked in capture.rooms
            ],
            status=capture.status,
            accepted_reservations=capture.accepted,
        )
        if ident.capacity.max_connections is not None:
            state.capacity.max_connections = ident.capacity.max_connections
        if ident.capacity.max_rooms is not None:
            state.capacity.max_rooms = ident.capacity.max_rooms
        return state

    def _capture(self, host: RoomHost) -> _Capture:
        rows = self._rows(host)
        if self._fleet_rooms:
            self._fleet_rooms.intersection_update(row[0] for row in rows)
        room_types = tuple(sorted(host.room_types()))
        rooms = tuple(rows)
        accepted = self._seats.accepted() if self._seats is not None else ()
        last = self._last
        if (
            last is not None
            and last.status == self.status
            and last.room_types == room_types
            and last.rooms == rooms
            and last.accepted == accepted
        ):
            return last
        digest = self._hash(room_types, rooms, accepted)
        self._last = _Capture(room_types, rooms, self.status, accepted, digest)
        return self._last

    def _rows(self, host: RoomHost) -> list[_RoomRow]:
        """The rooms sorted by id. Runs at every poll: a :class:`Room` (whose setters
        validate) is read without coercions, its matchmaking fields as one tuple."""
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

    def _hash(
        self,
        room_types: tuple[str, ...],
        rooms: tuple[_RoomRow, ...],
        accepted: tuple[str, ...],
    ) -> str:
        """The snapshot hash, reusing the entry texts of the rooms that did not change."""
        cached = self._entries
        entries: dict[wire.RoomRow, str] = {}

        def entry_text(row: wire.RoomRow) -> str:
            text = cached.get(row)
            if text is None:
                text = wire.room_entry_text(row)
            entries[row] = text
            return text

        ident = self.identity
        digest = wire.snapshot_hash(
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
            rooms=rooms,
            status=self.status,
            accepted_reservations=accepted,
            entry_text=entry_text,
        )
        self._entries = entries
        return digest
