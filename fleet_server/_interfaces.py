"""What the gateway is given: the narrow services of the core, and the types they speak.

The ``Orchestrator`` facade composes the core and hands the gateway one
:class:`Services` bundle — the fleet service (reads and control), the authenticator,
the event hub, the options, a readiness probe and the metrics (the registry ``/metrics``
exposes, the meter requests are counted with) — plus the field table the gRPC messages
are generated from. The gateway imports from this module
only, never the facade nor any other private core module, so there is no import circle
and a surface cannot reach past what it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fleet_agent.wire import canonical_json

from ._agent_token_service import AgentTokenInfo, AgentTokenService
from ._agent_tokens import MintedAgentToken
from ._auth import Audience, Authenticator, Principal
from ._capacity import CapacityRow
from ._envelope import LEADER_HEADER, rejection, rejection_of
from ._errors import ERROR_TABLE, ErrorCode, FleetError
from ._events import Encoder, EventHub, EventType, Subscription, Writer
from ._fields import (
    CAPACITY_FIELDS,
    INSTANCE_FIELDS,
    ROOM_FIELDS,
    Encoding,
    Field,
    compile_function,
)
from ._ids import is_valid_room_id
from ._metrics import FleetMetrics, Meter
from ._models import FleetStats, InstanceInfo, RoomInfo
from ._options import OrchestratorOptions
from ._placement import Placement, PlacementStrategy, ValidationError
from ._seat_service import SeatGrant, SeatReservation
from ._selectors import Expression, Selector, selectors_from_json
from ._tokens import MAX_TTL_S, MIN_TTL_S, MintedToken, Scope

__all__ = [
    "CAPACITY_FIELDS",
    "ERROR_TABLE",
    "INSTANCE_FIELDS",
    "LEADER_HEADER",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "ROOM_FIELDS",
    "AgentTokenInfo",
    "AgentTokenService",
    "Audience",
    "Authenticator",
    "CapacityRow",
    "ClusterService",
    "Encoder",
    "Encoding",
    "ErrorCode",
    "EventHub",
    "EventType",
    "Expression",
    "Field",
    "FleetError",
    "FleetMetrics",
    "FleetService",
    "FleetStats",
    "InstanceInfo",
    "Meter",
    "MintedAgentToken",
    "MintedToken",
    "OrchestratorOptions",
    "Placement",
    "PlacementStrategy",
    "Principal",
    "RoomInfo",
    "Scope",
    "SeatGrant",
    "SeatReservation",
    "Selector",
    "Services",
    "Subscription",
    "Surface",
    "ValidationError",
    "Writer",
    "canonical_json",
    "compile_function",
    "is_valid_room_id",
    "rejection",
    "rejection_of",
    "selectors_from_json",
]


Surface = Literal["api", "agent", "grpc"]
"""Where a caller was refused: the leader's address is given in that surface's form."""


class ClusterService(Protocol):
    """This node's role (CONTRACT §10): whether it leads, and where the leader is."""

    def leads(self) -> bool:
        """Single, or the leader with a fresh lease: it may accept agents and commands."""
        ...

    def leader_hint(self, surface: Surface) -> str | None:
        """The leader's URL for ``surface`` (``http://…``, ``ws://…``, gRPC
        ``host:port``), None when no node leads or this one does."""
        ...

    def info(self) -> dict[str, Any]:
        """``GET /v1/cluster``'s data."""
        ...


class FleetService(Protocol):
    """Reads and control of the whole fleet (``orch.fleet``; CONTRACT §6)."""

    @property
    def stats(self) -> FleetStats: ...
    @property
    def state_hash(self) -> str: ...
    @property
    def instances(self) -> list[InstanceInfo]: ...
    @property
    def rooms(self) -> list[RoomInfo]: ...

    def get_instance(self, instance_id: str) -> InstanceInfo | None: ...
    def capacity(
        self, group_by: str | None = None, type: str | None = None
    ) -> list[CapacityRow]: ...
    def get_room(self, room_id: str) -> RoomInfo | None: ...
    def position(self, row: InstanceInfo | RoomInfo) -> tuple[int, str]: ...
    def find_rooms(
        self,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        instance_id: str | None = None,
    ) -> list[RoomInfo]: ...

    async def create_room(
        self,
        type: str,
        room_id: str | None = None,
        placement: Placement | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> RoomInfo: ...
    async def destroy_room(self, room_id: str) -> None: ...
    async def reserve_seats(
        self,
        type: str,
        seats: int = 1,
        *,
        metadata: Mapping[str, Any] | None = None,
        placement: Placement | None = None,
        create: bool | Mapping[str, Any] | None = None,
        ttl_ms: int = 30_000,
    ) -> SeatGrant: ...
    def release_seats(self, reservation_id: str) -> None: ...
    async def drain_instance(self, instance_id: str) -> None: ...
    async def undrain_instance(self, instance_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a surface may use, composed by the facade."""

    options: OrchestratorOptions
    fleet: FleetService
    cluster: ClusterService
    auth: Authenticator
    hub: EventHub
    is_ready: Callable[[], bool]
    metrics: FleetMetrics
    meter: Meter  # ``metrics``, or the null meter when they are off
    agent_tokens: AgentTokenService
