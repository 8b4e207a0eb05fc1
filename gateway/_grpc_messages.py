"""Conversion between the core's read shapes and the ``rivalis.fleet.v1`` messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server._interfaces import (
    FleetStats,
    InstanceInfo,
    Placement,
    PlacementStrategy,
    RoomInfo,
    ValidationError,
)

__all__ = [
    "event_bytes",
    "event_message",
    "instance_message",
    "label_filter",
    "placement_from_message",
    "room_message",
    "stats_message",
]


def room_message(room: RoomInfo) -> pb.RoomInfo:
    return pb.RoomInfo(
        id=room.id,
        type=room.type,
        connections=room.connections,
        instance_id=room.instance_id,
        endpoint_url=room.endpoint_url,
        local=room.local,
    )


def instance_message(instance: InstanceInfo) -> pb.InstanceInfo:
    capacity = pb.Capacity()
    if instance.capacity.max_connections is not None:
        capacity.max_connections = instance.capacity.max_connections
    if instance.capacity.max_rooms is not None:
        capacity.max_rooms = instance.capacity.max_rooms
    return pb.InstanceInfo(
        id=instance.id,
        name=instance.name,
        process_uid=instance.process_uid,
        endpoint_url=instance.endpoint_url,
        labels=dict(instance.labels),
        room_types=instance.room_types,
        rooms=[room_message(room) for room in instance.rooms],
        connections=instance.connections,
        capacity=capacity,
        auto_create=instance.auto_create,
        status=instance.status,
        last_sync_at=instance.last_sync_at,
        agent_version=instance.agent_version,
        protocol_version=instance.protocol_version,
    )


def stats_message(stats: FleetStats) -> pb.FleetStats:
    return pb.FleetStats(
        instances=stats.instances,
        rooms=stats.rooms,
        connections=stats.connections,
        room_types=stats.room_types,
        state_hash=stats.state_hash,
    )


def event_message(event_type: str, payload: Any) -> pb.FleetEvent:
    """A fleet event with its typed payload (``sync`` carries stats, the rest a view)."""
    if isinstance(payload, InstanceInfo):
        return pb.FleetEvent(type=event_type, instance=instance_message(payload))
    if isinstance(payload, RoomInfo):
        return pb.FleetEvent(type=event_type, room=room_message(payload))
    if isinstance(payload, FleetStats):
        return pb.FleetEvent(type=event_type, stats=stats_message(payload))
    raise TypeError(f"event {event_type} has an unexpected payload {type(payload).__name__}")


def event_bytes(event_type: str, payload: Any) -> bytes:
    """:func:`event_message`, serialized: what ``WatchEvents`` sends, encoded once per event."""
    return event_message(event_type, payload).SerializeToString()


def placement_from_message(message: pb.Placement) -> Placement:
    """A :class:`Placement`; an unset optional field takes the core's default."""
    return Placement(
        instance_id=message.instance_id if message.HasField("instance_id") else None,
        process_uid=message.process_uid if message.HasField("process_uid") else None,
        strategy=cast(PlacementStrategy, message.strategy)
        if message.HasField("strategy")
        else "least-loaded",
        labels=dict(message.labels),
        force=message.force,
    )


def label_filter(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels to match, as REST takes them: every key non-empty."""
    if any(not key for key in labels):
        raise ValidationError("label keys must be non-empty")
    return dict(labels)
