"""The read model's public shapes: frozen dataclasses with camelCase ``to_dict()``.

:class:`RoomInfo` and :class:`InstanceInfo` declare their fields in the order of the
field table (:mod:`._fields`). Generated from it: their ``to_dict()``, their builders
from the agent's report, and the comparison of two snapshots on what the shapes show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from fleet_agent import Capacity

from ._fields import (
    CAPACITY_FIELDS,
    INSTANCE_FIELDS,
    ROOM_FIELDS,
    Encoding,
    Field,
    check_fields,
    compile_function,
    record_builder,
    report_attributes,
)

if TYPE_CHECKING:
    from ._instance import _Room
    from ._snapshot import ReportedRoom, Snapshot

__all__ = [
    "Capacity",
    "FleetStats",
    "InstanceInfo",
    "InstanceStatus",
    "RoomInfo",
    "build_instance_info",
    "build_room_info",
    "same_content",
]

InstanceStatus = Literal["active", "draining"]


def _dict_value(field: Field, value: str) -> str:
    """Source for the JSON-ready form of ``value``, an expression of ``field``'s value."""
    encoding = field.encoding
    if encoding is Encoding.LIST:
        return f"list({value})"
    if encoding is Encoding.MAPPING or encoding is Encoding.OBJECT:
        return f"dict({value})"
    if encoding is Encoding.CAPACITY:
        return _dict_source(CAPACITY_FIELDS, value)
    if encoding is Encoding.ROOMS:
        return f"[room.to_dict() for room in {value}]"
    return value


def _dict_source(fields: tuple[Field, ...], owner: str) -> str:
    items = ", ".join(f"{f.key!r}: {_dict_value(f, f'{owner}.{f.attr}')}" for f in fields)
    return f"{{{items}}}"


def _to_dict(owner: str, fields: tuple[Field, ...]) -> Callable[[Any], dict[str, Any]]:
    """``to_dict(self)`` written out for ``fields``: one dict display, keys in table order."""
    source = f"def to_dict(self):\n    return {_dict_source(fields, 'self')}\n"
    return compile_function("to_dict", source, {}, module=__name__, qualname=f"{owner}.to_dict")


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: str
    type: str
    connections: int
    instance_id: str
    endpoint_url: str
    local: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)  # what the game server says
    max_connections: int | None = None  # seats in the room; None: unlimited
    locked: bool = False  # a locked room takes no new seats
    reserved_seats: int = 0  # held by live seat reservations

    to_dict: ClassVar[Callable[[RoomInfo], dict[str, Any]]] = _to_dict("RoomInfo", ROOM_FIELDS)

    @property
    def free_seats(self) -> int | None:
        """``max_connections − connections − reserved_seats`` (not below 0); None: unlimited."""
        if self.max_connections is None:
            return None
        return max(0, self.max_connections - self.connections - self.reserved_seats)


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

    to_dict: ClassVar[Callable[[InstanceInfo], dict[str, Any]]] = _to_dict(
        "InstanceInfo", INSTANCE_FIELDS
    )


check_fields(RoomInfo, ROOM_FIELDS)
check_fields(InstanceInfo, INSTANCE_FIELDS)
check_fields(Capacity, CAPACITY_FIELDS)

# Builders, positional: the report (a reported room or a room record carrying the same
# values; an applied snapshot), then the values the read model supplies, in this order.
build_room_info: Final[Callable[[_Room | ReportedRoom, str, str, str, int], RoomInfo]] = (
    record_builder(
        RoomInfo,
        ROOM_FIELDS,
        ("id", "instance_id", "endpoint_url", "reserved_seats"),
        module=__name__,
    )
)
build_instance_info: Final[
    Callable[[Snapshot, str, tuple[RoomInfo, ...], int, InstanceStatus, int], InstanceInfo]
] = record_builder(
    InstanceInfo,
    INSTANCE_FIELDS,
    ("id", "rooms", "connections", "status", "last_sync_at"),
    module=__name__,
)
_shown = attrgetter(*report_attributes(INSTANCE_FIELDS))


def same_content(previous: Snapshot, snapshot: Snapshot) -> bool:
    """Whether two snapshots of one instance agree on everything the shapes show (all
    but ``seq`` and ``hash``)."""
    return bool(_shown(previous) == _shown(snapshot))


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
