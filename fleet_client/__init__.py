"""A client for matchmakers and tools: typed, async, retries that never duplicate a
room, the leader followed, and events that survive a failover (docs/fleet-client.md).

    async with FleetClient(["http://127.0.0.1:7350"], token_or_key=key) as fleet:
        room = await fleet.create_room("match", options={"map": "dust"})
"""

from ._client import FleetClient, new_room_id
from ._errors import (
    Busy,
    CommandFailed,
    Conflict,
    FleetClientError,
    Forbidden,
    InternalError,
    InvalidRequest,
    NoCandidate,
    NotFound,
    NotLeader,
    NotReady,
    OutcomeUnknown,
    RoomExists,
    Throttled,
    Unauthorized,
    Unavailable,
)
from ._models import (
    CapacityRow,
    ClusterInfo,
    ClusterLeader,
    ClusterMember,
    FleetEvent,
    FleetStats,
    InstanceInfo,
    RoomInfo,
    SeatGrant,
    SeatReservation,
)

__all__ = [
    "Busy",
    "CapacityRow",
    "ClusterInfo",
    "ClusterLeader",
    "ClusterMember",
    "CommandFailed",
    "Conflict",
    "FleetClient",
    "FleetClientError",
    "FleetEvent",
    "FleetStats",
    "Forbidden",
    "InstanceInfo",
    "InternalError",
    "InvalidRequest",
    "NoCandidate",
    "NotFound",
    "NotLeader",
    "NotReady",
    "OutcomeUnknown",
    "RoomExists",
    "RoomInfo",
    "SeatGrant",
    "SeatReservation",
    "Throttled",
    "Unauthorized",
    "Unavailable",
    "new_room_id",
]
