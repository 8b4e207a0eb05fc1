"""The read model's public shapes: frozen dataclasses with camelCase ``to_dict()``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet_agent import Capacity

__all__ = ["Capacity", "FleetStats", "InstanceInfo", "InstanceStatus", "RoomInfo"]

InstanceStatus = Literal["active", "draining"]


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: str
    type: str
    connections: int
    instance_id: str
    endpoint_url: str
    local: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "connections": self.connections,
            "instanceId": self.instance_id,
            "endpointUrl": self.endpoint_url,
            "local": self.local,
        }


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "processUid": self.process_uid,
            "endpointUrl": self.endpoint_url,
            "labels": dict(self.labels),
            "roomTypes": list(self.room_types),
            "rooms": [room.to_dict() for room in self.rooms],
            "connections": self.connections,
            "capacity": {
                "maxConnections": self.capacity.max_connections,
                "maxRooms": self.capacity.max_rooms,
            },
            "autoCreate": self.auto_create,
            "status": self.status,
            "lastSyncAt": self.last_sync_at,
            "agentVersion": self.agent_version,
            "protocolVersion": self.protocol_version,
        }


@dataclass(frozen=True, slots=True)
class FleetStats:
    instances: int
    rooms: int
    connections: int
    room_types: tuple[str, ...] = field(default=())
    state_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "rooms": self.rooms,
            "connections": self.connections,
            "roomTypes": list(self.room_types),
            "stateHash": self.state_hash,
        }
