"""The agent's snapshot: what it reports in reply to each Poll.

A full ``State`` carries the identity (name, process uid, versions, endpoint, labels,
capacity, auto_create), the room types, every room with its origin, and the status; a
hash-only ``State`` carries only ``req_id``, ``full=false``, ``seq`` and the hash. The
hash is :func:`fleet_agent.wire.snapshot_hash`, recomputed only when something it covers
changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._host import RoomHost
from ._options import Capacity

__all__ = ["FLEET", "LOCAL", "Identity", "Snapshot", "SnapshotStatus"]

SnapshotStatus: TypeAlias = Literal["active", "draining"]
FLEET: Final = "fleet"
LOCAL: Final = "local"

_RoomRow: TypeAlias = tuple[str, str, int, str]


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
    hash: str


class Snapshot:
    """Builds the replies of one agent: status, provenance marks, seq and the hash cache."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.status: SnapshotStatus = "active"
        self.seq = 0
        self._fleet_rooms: set[str] = set()
        self._last: _Capture | None = None

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
                agent_pb2.RoomState(id=rid, type=rtype, connections=conns, origin=origin)
                for rid, rtype, conns, origin in capture.rooms
            ],
            status=capture.status,
        )
        if ident.capacity.max_connections is not None:
            state.capacity.max_connections = ident.capacity.max_connections
        if ident.capacity.max_rooms is not None:
            state.capacity.max_rooms = ident.capacity.max_rooms
        return state

    def _capture(self, host: RoomHost) -> _Capture:
        rows = sorted(
            (
                str(view.id),
                str(view.type),
                max(0, int(view.connections)),
                self.origin(str(view.id)),
            )
            for view in host.rooms()
        )
        if self._fleet_rooms:
            self._fleet_rooms.intersection_update(row[0] for row in rows)
        room_types = tuple(sorted(host.room_types()))
        rooms = tuple(rows)
        last = self._last
        if (
            last is not None
            and last.status == self.status
            and last.room_types == room_types
            and last.rooms == rooms
        ):
            return last
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
        )
        self._last = _Capture(room_types, rooms, self.status, digest)
        return self._last
