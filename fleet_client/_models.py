"""What the client returns: frozen dataclasses with the orchestrator's field names.

``RoomInfo``, ``InstanceInfo``, ``FleetStats``, ``SeatReservation``, ``SeatGrant`` and
``CapacityRow`` mirror ``fleet_server``'s (a test pins each pair's fields); each has
``from_json`` for the REST envelope's camelCase ``data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet_agent import Capacity

__all__ = [
    "CapacityRow",
    "ClusterInfo",
    "ClusterLeader",
    "ClusterMember",
    "FleetEvent",
    "FleetStats",
    "InstanceInfo",
    "RoomInfo",
    "SeatGrant",
    "SeatReservation",
]

InstanceStatus = Literal["active", "draining"]


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: str
    type: str
    connections: int
    instance_id: str
    endpoint_url: str
    local: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)
    max_connections: int | None = None
    locked: bool = False
    reserved_seats: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoomInfo:
        return cls(
            id=data["id"],
            type=data["type"],
            connections=data["connections"],
            instance_id=data["instanceId"],
            endpoint_url=data["endpointUrl"],
            local=data["local"],
            metadata=data.get("metadata") or {},
            max_connections=data.get("maxConnections"),
            locked=data.get("locked", False),
            reserved_seats=data.get("reservedSeats", 0),
        )


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    id: str
    name: str
    process_uid: str
    endpoint_url: str
    labels: Mapping[str, str]
    room_types: tuple[str, ...]
    rooms: tuple[RoomInfo, ...]
    connections: int
    capacity: Capacity
    auto_create: bool
    status: InstanceStatus
    last_sync_at: int
    agent_version: str
    protocol_version: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceInfo:
        capacity = data.get("capacity") or {}
        return cls(
            id=data["id"],
            name=data["name"],
            process_uid=data["processUid"],
            endpoint_url=data["endpointUrl"],
            labels=dict(data.get("labels") or {}),
            room_types=tuple(data.get("roomTypes") or ()),
            rooms=tuple(RoomInfo.from_json(room) for room in data.get("rooms") or ()),
            connections=data["connections"],
            capacity=Capacity(capacity.get("maxConnections"), capacity.get("maxRooms")),
            auto_create=data["autoCreate"],
            status=data["status"],
            last_sync_at=data["lastSyncAt"],
            agent_version=data["agentVersion"],
            protocol_version=data["protocolVersion"],
        )


@dataclass(frozen=True, slots=True)
class FleetStats:
    instances: int
    rooms: int
    connections: int
    room_types: tuple[str, ...] = field(default=())
    state_hash: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FleetStats:
        return cls(
            instances=data["instances"],
            rooms=data["rooms"],
            connections=data["connections"],
            room_types=tuple(data.get("roomTypes") or ()),
            state_hash=data.get("stateHash", ""),
        )


@dataclass(frozen=True, slots=True)
class SeatReservation:
    id: str
    seats: int
    expires_at: int  # ms since the epoch
    ticket: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeatReservation:
        return cls(data["id"], data["seats"], data["expiresAt"], data["ticket"])


@dataclass(frozen=True, slots=True)
class SeatGrant:
    room: RoomInfo
    reservation: SeatReservation
    created: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeatGrant:
        return cls(
            RoomInfo.from_json(data["room"]),
            SeatReservation.from_json(data["reservation"]),
            bool(data["created"]),
        )


@dataclass(frozen=True, slots=True)
class CapacityRow:
    labels: dict[str, str | None] = field(default_factory=dict)
    instances: int = 0
    active: int = 0
    draining: int = 0
    stale: int = 0
    rooms: int = 0
    max_rooms: int | None = 0
    free_room_slots: int | None = 0
    connections: int = 0
    free_connections: int | None = 0
    reserved_seats: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CapacityRow:
        return cls(
            labels=dict(data.get("labels") or {}),
            instances=data["instances"],
            active=data["active"],
            draining=data["draining"],
            stale=data["stale"],
            rooms=data["rooms"],
            max_rooms=data.get("maxRooms"),
            free_room_slots=data.get("freeRoomSlots"),
            connections=data["connections"],
            free_connections=data.get("freeConnections"),
            reserved_seats=data.get("reservedSeats", 0),
        )


@dataclass(frozen=True, slots=True)
class ClusterLeader:
    id: str
    url: str
    grpc_url: str | None
    agent_url: str
    since: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterLeader:
        return cls(data["id"], data["url"], data.get("grpcUrl"), data["agentUrl"], data["since"])


@dataclass(frozen=True, slots=True)
class ClusterMember:
    id: str
    url: str
    role: str


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """The answering node's role, the leader, whether it has settled, the live members."""

    role: str  # "leader", "standby" or "single"
    leader: ClusterLeader | None
    settled: bool
    members: tuple[ClusterMember, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterInfo:
        leader = data.get("leader")
        return cls(
            role=data["role"],
            leader=ClusterLeader.from_json(leader) if leader else None,
            settled=bool(data.get("settled")),
            members=tuple(
                ClusterMember(m["id"], m["url"], m["role"]) for m in data.get("members") or ()
            ),
        )


EventData = InstanceInfo | RoomInfo | FleetStats


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """One fleet event: ``instance:*`` carry an :class:`InstanceInfo`, ``room:*`` a
    :class:`RoomInfo`, ``sync`` the :class:`FleetStats`. ``resync`` is True on the
    events the client made up after re-reading the fleet on a (re)connection."""

    type: str
    data: EventData
    resync: bool = False

    @classmethod
    def from_json(cls, event_type: str, data: Mapping[str, Any]) -> FleetEvent:
        if event_type.startswith("instance:"):
            return cls(event_type, InstanceInfo.from_json(data))
        if event_type.startswith("room:"):
            return cls(event_type, RoomInfo.from_json(data))
        return cls(event_type, FleetStats.from_json(data))
