"""The capacity signal for autoscalers (CONTRACT §14, docs/integrations.md §1).

One row per value of a label (``None`` for instances without it): how many instances,
in which state, and how much room is left. Free figures count active instances only
(draining and stale ones add none) and are ``None`` when an active instance in the
group is unlimited; free room slots subtract rooms being created and timeout holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._instance import Instance

__all__ = ["CapacityRow", "capacity_rows"]


@dataclass(slots=True)
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": dict(self.labels),
            "instances": self.instances,
            "active": self.active,
            "draining": self.draining,
            "stale": self.stale,
            "rooms": self.rooms,
            "maxRooms": self.max_rooms,
            "freeRoomSlots": self.free_room_slots,
            "connections": self.connections,
            "freeConnections": self.free_connections,
            "reservedSeats": self.reserved_seats,
        }

    def add(self, instance: Instance) -> None:
        snapshot = instance.snapshot
        assert snapshot is not None
        self.instances += 1
        self.rooms += len(instance.rooms)
        self.connections += instance.connections
        self.reserved_seats += sum(room.reserved for room in instance.rooms.values())
        max_rooms, max_connections = snapshot.max_rooms, snapshot.max_connections
        if self.max_rooms is not None:
            self.max_rooms = None if max_rooms is None else self.max_rooms + max_rooms
        if instance.stale:
            self.stale += 1
            return
        if instance.effective_status != "active":
            self.draining += 1
            return
        self.active += 1
        if self.free_room_slots is not None:
            self.free_room_slots = (
                None
                if max_rooms is None
                else self.free_room_slots + max(0, max_rooms - instance.room_load)
            )
        if self.free_connections is not None:
            self.free_connections = (
                None
                if max_connections is None
                else self.free_connections + max(0, max_connections - instance.connections)
            )


def capacity_rows(
    instances: Iterable[Instance], group_by: str | None = None, room_type: str | None = None
) -> list[CapacityRow]:
    """Rows in order of first appearance (join order); without ``group_by`` always one row
    (``labels`` empty, zeros for an empty fleet)."""
    rows: dict[str | None, CapacityRow] = {}
    for instance in instances:
        snapshot = instance.snapshot
        if snapshot is None or (room_type is not None and room_type not in snapshot.room_types):
            continue
        value = snapshot.labels.get(group_by) if group_by is not None else None
        row = rows.get(value)
        if row is None:
            row = rows[value] = CapacityRow(labels={group_by: value} if group_by else {})
        row.add(instance)
    if group_by is None and not rows:
        return [CapacityRow()]
    return list(rows.values())
