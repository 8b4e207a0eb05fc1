"""What the client asks of a transport (REST or gRPC): one attempt of each call against
the current node, raising :class:`~fleet_client.FleetClientError` on any failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._models import (
    CapacityRow,
    ClusterInfo,
    FleetEvent,
    FleetStats,
    InstanceInfo,
    RoomInfo,
    SeatGrant,
)

__all__ = ["RoomFilter", "SeatRequest", "Transport"]


@dataclass(frozen=True, slots=True)
class RoomFilter:
    """``rooms(**filters)``: every given field must match."""

    type: str | None = None
    instance_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    min_free_seats: int | None = None
    locked: bool | None = None


@dataclass(frozen=True, slots=True)
class SeatRequest:
    type: str
    seats: int = 1
    metadata: Mapping[str, Any] | None = None
    placement: Mapping[str, Any] | None = None
    create: Mapping[str, Any] | None = None
    ttl_ms: int | None = None


class Transport(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def stats(self) -> FleetStats: ...
    async def instances(self) -> list[InstanceInfo]: ...
    async def rooms(self, where: RoomFilter) -> list[RoomInfo]: ...
    async def get_room(self, room_id: str) -> RoomInfo: ...
    async def create_room(
        self,
        type: str,
        room_id: str,
        options: Mapping[str, Any] | None,
        placement: Mapping[str, Any] | None,
    ) -> RoomInfo: ...
    async def destroy_room(self, room_id: str) -> None: ...
    async def drain(self, instance_id: str) -> None: ...
    async def undrain(self, instance_id: str) -> None: ...
    async def reserve_seats(self, request: SeatRequest) -> SeatGrant: ...
    async def release_seats(self, reservation_id: str) -> None: ...
    async def capacity(self, group_by: str | None, type: str | None) -> list[CapacityRow]: ...
    async def cluster(self) -> ClusterInfo: ...
    def events(self) -> AsyncIterator[FleetEvent | None]:
        """One event stream from the current node: ``None`` first, once the stream is
        live, then its events; it ends (or raises) with the stream."""
        ...
