"""Conversion between the core's read shapes and the ``rivalis.fleet.v1`` messages.

The room and instance messages are generated from the field table
(:mod:`fleet_server._fields`) at import time, one keyword argument per field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from rivalis.fleet.v1 import control_pb2 as pb

from fleet_server._interfaces import (
    CAPACITY_FIELDS,
    INSTANCE_FIELDS,
    ROOM_FIELDS,
    AgentTokenInfo,
    CapacityRow,
    Encoding,
    Field,
    FleetStats,
    InstanceInfo,
    Placement,
    PlacementStrategy,
    RoomInfo,
    SeatGrant,
    ValidationError,
    canonical_json,
    compile_function,
    selectors_from_json,
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


def _value(field: Field, value: str) -> str:
    """Source for the message form of ``value``, an expression of ``field``'s value."""
    if field.encoding is Encoding.MAPPING:
        return f"dict({value})"
    if field.encoding is Encoding.OBJECT:
        return f"canonical_json({value})"
    if field.encoding is Encoding.ROOMS:
        return f"[room_message(room) for room in {value}]"
    return value


def _builder(name: str, message: str, fields: tuple[Field, ...], env: dict[str, Any]) -> Any:
    """``name(info)``: the ``pb.<message>`` of an info, one keyword per field of the table.

    A capacity is a nested ``pb.Capacity`` whose null limits stay unset.
    """
    lines = [f"def {name}(info):"]
    arguments = []
    for field in fields:
        if field.encoding is Encoding.CAPACITY:
            lines.append(f"    {field.attr} = pb.Capacity()")
            for sub in CAPACITY_FIELDS:
                lines.append(f"    limit = info.{field.attr}.{sub.attr}")
                lines.append(f"    if limit is not None: {field.attr}.{sub.grpc} = limit")
            arguments.append(f"{field.grpc}={field.attr}")
        else:
            arguments.append(f"{field.grpc}={_value(field, f'info.{field.attr}')}")
    lines.append(f"    return pb.{message}({', '.join(arguments)})")
    return compile_function(name, "\n".join(lines) + "\n", {"pb": pb, **env}, module=__name__)


room_message: Final[Callable[[RoomInfo], pb.RoomInfo]] = _builder(
    "room_message", "RoomInfo", ROOM_FIELDS, {"canonical_json": canonical_json}
)
instance_message: Final[Callable[[InstanceInfo], pb.InstanceInfo]] = _builder(
    "instance_message", "InstanceInfo", INSTANCE_FIELDS, {"room_message": room_message}
)


def stats_message(stats: FleetStats) -> pb.FleetStats:
    return pb.FleetStats(
        instances=stats.instances,
        rooms=stats.rooms,
        connections=stats.connections,
        room_types=stats.room_types,
        state_hash=stats.state_hash,
    )


def cluster_message(info: Mapping[str, Any]) -> pb.ClusterInfo:
    """``GET /v1/cluster``'s data as its message (an unset ``leader``: nobody leads)."""
    leader = info["leader"]
    return pb.ClusterInfo(
        role=info["role"],
        leader=None
        if leader is None
        else pb.ClusterLeader(
            id=leader["id"],
            url=leader["url"],
            grpc_url=leader["grpcUrl"] or "",
            agent_url=leader["agentUrl"],
            since=leader["since"],
        ),
        settled=info["settled"],
        members=[
            pb.ClusterMember(id=m["id"], url=m["url"], role=m["role"]) for m in info["members"]
        ],
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
        selectors=selectors_from_json(
            [
                {
                    "labels": dict(s.labels),
                    "expressions": [
                        {"key": e.key, "op": e.op, "values": list(e.values)} for e in s.expressions
                    ],
                }
                for s in message.selectors
            ]
        ),
    )


def capacity_message(row: CapacityRow) -> pb.CapacityGroup:
    """A capacity row; a group without the label has ``label_missing`` and no labels."""
    labels = {k: v for k, v in row.labels.items() if v is not None}
    return pb.CapacityGroup(
        labels=labels,
        label_missing=len(labels) < len(row.labels),
        instances=row.instances,
        active=row.active,
        draining=row.draining,
        stale=row.stale,
        rooms=row.rooms,
        max_rooms=row.max_rooms,
        free_room_slots=row.free_room_slots,
        connections=row.connections,
        free_connections=row.free_connections,
        reserved_seats=row.reserved_seats,
    )


def json_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object a request field's text holds; ``VALIDATION`` otherwise."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValidationError(f"{what} must be a JSON object's text") from None
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object's text")
    return value


def grant_message(grant: SeatGrant) -> pb.ReserveSeatsResponse:
    reservation = grant.reservation
    return pb.ReserveSeatsResponse(
        room=room_message(grant.room),
        reservation=pb.SeatReservation(
            id=reservation.id,
            seats=reservation.seats,
            expires_at=reservation.expires_at,
            ticket=reservation.ticket,
        ),
        created=grant.created,
    )


def label_filter(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels to match, as REST takes them: every key non-empty."""
    if any(not key for key in labels):
        raise ValidationError("label keys must be non-empty")
    return dict(labels)


def agent_token_message(row: AgentTokenInfo) -> pb.AgentTokenInfo:
    """A listed agent token (CONTRACT §13): what it binds and who holds it."""
    return pb.AgentTokenInfo(
        id=row.id,
        name=row.name,
        labels=dict(row.labels),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        instances=list(row.instances),
    )
