"""The ``rivalis.fleet.v1.FleetControl`` servicer over the fleet service (SPEC §11).

Every call runs inside a :class:`_CallGuard`: the failed-auth throttle
(keyed on the peer IP), the admin key or API token check, the token's scope (a ``read``
token on a call that changes the fleet: ``PERMISSION_DENIED`` + ``FORBIDDEN``), the
conversion of a
:class:`~fleet_server.FleetError` into its gRPC status from ``ERROR_TABLE`` with the
code in trailing metadata ``fleet-cause``, ``INTERNAL`` for anything unexpected
(logged on ``fleet.grpc``), and the audit line for the mutating calls. Handlers only
raise ``FleetError``; they never abort a call themselves.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Never, cast

import grpc
from rivalis.fleet.v1 import control_pb2 as pb
from rivalis.fleet.v1 import control_pb2_grpc as pb_grpc

from fleet_server._interfaces import (
    AgentTokenService,
    Audience,
    Authenticator,
    ClusterService,
    ErrorCode,
    FleetError,
    FleetService,
    Principal,
    RoomInfo,
)

from ._envelope import found
from ._grpc_messages import (
    agent_token_message,
    capacity_message,
    cluster_message,
    grant_message,
    instance_message,
    json_object,
    label_filter,
    placement_from_message,
    room_message,
    stats_message,
)
from ._grpc_watch import WatchHub
from ._paging import page
from ._parsing import RoomFilter

__all__ = [
    "CAUSE_KEY",
    "LEADER_KEY",
    "RETRY_AFTER_KEY",
    "FleetControlService",
    "method_handlers",
    "peer_ip",
]

log = logging.getLogger("fleet.grpc")

CAUSE_KEY: Final = "fleet-cause"
RETRY_AFTER_KEY: Final = "retry-after"  # whole seconds, as HTTP's Retry-After
LEADER_KEY: Final = "fleet-leader"  # NOT_LEADER: the leader's gRPC host:port
_MAX_DETAILS: Final = 200

Context = grpc.aio.ServicerContext[Any, Any]


def peer_ip(peer: str) -> str:
    """The client IP of a gRPC peer string (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``)."""
    kind, _, address = peer.partition(":")
    if kind == "ipv4":
        return address.rpartition(":")[0] or "unknown"
    if kind == "ipv6":
        host = address.rpartition(":")[0]
        return urllib.parse.unquote(host.removeprefix("[").removesuffix("]")) or "unknown"
    return kind or "unknown"


def _bearer(context: Context) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == "authorization":
            text = value if isinstance(value, str) else value.decode("latin-1")
            return Authenticator.bearer(text)
    return None


def _page_args(limit: int, cursor: str) -> tuple[int | None, str | None]:
    return (limit or None, cursor or None)


class _CallGuard:
    """``async with``: authenticate on entry; on exit turn a failure into its status.

    It never swallows an exception: a failure leaves as the call's abort.
    """

    def __init__(
        self,
        auth: Authenticator,
        cluster: ClusterService | None,
        context: Context,
        method: str,
        audited: bool,
        writes: bool,
        keys_only: bool = False,
    ) -> None:
        self._auth = auth
        self._writes = writes
        self._keys_only = keys_only
        self._cluster = cluster  # None: any role may answer
        self._context = context
        self._method = method
        self._audited = audited
        self._ip = peer_ip(context.peer())
        self._principal: Principal | None = None

    async def __aenter__(self) -> str:
        """Authenticate; returns the client IP."""
        try:
            self._principal = self._auth.authenticate(
                Audience.ADMIN, self._ip, f"GRPC {self._method}", _bearer(self._context), log=log
            )
        except FleetError as exc:
            await self._fail(exc)
        if not self._principal.may(self._writes):
            await self._fail(FleetError(ErrorCode.FORBIDDEN, "a read token may not change this"))
        if self._keys_only and self._principal.token:
            await self._fail(FleetError(ErrorCode.FORBIDDEN, "credentials are minted with a key"))
        if self._cluster is not None and not self._cluster.leads():
            await self._fail(
                FleetError(ErrorCode.NOT_LEADER, "this orchestrator is not the leader")
            )
        return self._ip

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._audit(grpc.StatusCode.OK.name)
        elif isinstance(exc, FleetError):
            await self._fail(exc)
        elif isinstance(exc, Exception):
            log.error("grpc call failed method=%s", self._method, exc_info=exc)
            await self._fail(FleetError(ErrorCode.INTERNAL, "internal error"))
        else:  # cancelled by the client or the server stopping
            self._audit(grpc.StatusCode.CANCELLED.name)

    async def _fail(self, error: FleetError) -> Never:
        status = grpc.StatusCode[error.grpc_status]
        self._audit(status.name)
        metadata: tuple[tuple[str, str], ...] = ((CAUSE_KEY, error.code.value),)
        if error.retry_after_s is not None:
            metadata += ((RETRY_AFTER_KEY, str(error.retry_after_s)),)
        if error.code is ErrorCode.NOT_LEADER and self._cluster is not None:
            leader = self._cluster.leader_hint("grpc")
            if leader is not None:
                metadata += ((LEADER_KEY, leader),)
        await self._context.abort(status, error.message[:_MAX_DETAILS], trailing_metadata=metadata)

    def _audit(self, outcome: str) -> None:
        if self._audited:
            self._auth.audit(f"GRPC {self._method}", self._principal, self._ip, outcome)


class FleetControlService(pb_grpc.FleetControlServicer):
    """Translates each RPC onto the fleet service."""

    def __init__(
        self,
        fleet: FleetService,
        cluster: ClusterService,
        auth: Authenticator,
        hub: WatchHub,
        agent_tokens: AgentTokenService,
    ) -> None:
        self._fleet = fleet
        self._cluster = cluster
        self._auth = auth
        self._hub = hub
        self._agent_tokens = agent_tokens

    def _guard(
        self,
        context: Context,
        method: str,
        *,
        audited: bool = False,
        any_role: bool = False,
        keys_only: bool = False,
    ) -> _CallGuard:
        cluster = None if any_role else self._cluster
        # Every audited call changes the fleet: a read token may not make it.
        return _CallGuard(
            self._auth, cluster, context, method, audited, writes=audited, keys_only=keys_only
        )

    # --- agent tokens (CONTRACT §13) ----------------------------------------------

    async def CreateAgentToken(
        self, request: pb.CreateAgentTokenRequest, context: Context
    ) -> pb.CreateAgentTokenResponse:
        async with self._guard(context, "CreateAgentToken", audited=True):
            minted = self._agent_tokens.create(
                request.name if request.HasField("name") else None,
                dict(request.labels) or None,
                request.ttl_s if request.HasField("ttl_s") else None,
            )
            return pb.CreateAgentTokenResponse(
                id=minted.id, token=minted.token, expires_at=minted.expires_at
            )

    async def ListAgentTokens(
        self, request: pb.ListAgentTokensRequest, context: Context
    ) -> pb.ListAgentTokensResponse:
        async with self._guard(context, "ListAgentTokens"):
            return pb.ListAgentTokensResponse(
                tokens=[agent_token_message(row) for row in self._agent_tokens.list()]
            )

    async def RevokeAgentToken(
        self, request: pb.RevokeAgentTokenRequest, context: Context
    ) -> pb.RevokeAgentTokenResponse:
        async with self._guard(context, "RevokeAgentToken", audited=True):
            await self._agent_tokens.revoke(request.id)
            return pb.RevokeAgentTokenResponse()

    # --- reads ------------------------------------------------------------------

    async def GetCluster(self, request: pb.GetClusterRequest, context: Context) -> pb.ClusterInfo:
        async with self._guard(context, "GetCluster", any_role=True):
            return cluster_message(self._cluster.info())

    async def ReserveSeats(
        self, request: pb.ReserveSeatsRequest, context: Context
    ) -> pb.ReserveSeatsResponse:
        async with self._guard(context, "ReserveSeats", audited=True):
            placement = (
                placement_from_message(request.placement) if request.HasField("placement") else None
            )
            create = None
            if request.HasField("create"):
                create = {"options": json_object(request.create.options, "create.options")}
            grant = await self._fleet.reserve_seats(
                request.type,
                request.seats or 1,
                metadata=json_object(request.metadata, "metadata") if request.metadata else None,
                placement=placement,
                create=create,
                ttl_ms=request.ttl_ms or 30_000,
            )
            return grant_message(grant)

    async def ReleaseSeats(
        self, request: pb.ReleaseSeatsRequest, context: Context
    ) -> pb.ReleaseSeatsResponse:
        async with self._guard(context, "ReleaseSeats", audited=True):
            self._fleet.release_seats(request.reservation_id)
            return pb.ReleaseSeatsResponse()

    async def GetCapacity(
        self, request: pb.GetCapacityRequest, context: Context
    ) -> pb.GetCapacityResponse:
        async with self._guard(context, "GetCapacity"):
            rows = self._fleet.capacity(request.group_by or None, request.type or None)
            return pb.GetCapacityResponse(groups=[capacity_message(row) for row in rows])

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.FleetStats:
        async with self._guard(context, "GetStats"):
            return stats_message(self._fleet.stats)

    async def ListInstances(
        self, request: pb.ListInstancesRequest, context: Context
    ) -> pb.ListInstancesResponse:
        async with self._guard(context, "ListInstances"):
            rows = page(
                self._fleet.instances,
                self._fleet.position,
                *_page_args(request.limit, request.cursor),
            )
            return pb.ListInstancesResponse(
                instances=[instance_message(i) for i in rows.rows],
                count=rows.count,
                next_cursor=rows.next_cursor or "",
            )

    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: Context
    ) -> pb.InstanceInfo:
        async with self._guard(context, "GetInstance"):
            instance = self._fleet.get_instance(request.instance_id)
            return instance_message(found(instance, ErrorCode.INSTANCE_NOT_FOUND))

    async def ListInstanceRooms(
        self, request: pb.ListInstanceRoomsRequest, context: Context
    ) -> pb.ListRoomsResponse:
        async with self._guard(context, "ListInstanceRooms"):
            found(self._fleet.get_instance(request.instance_id), ErrorCode.INSTANCE_NOT_FOUND)
            rooms = self._fleet.find_rooms(instance_id=request.instance_id)
            return self._rooms_page(rooms, request.limit, request.cursor)

    async def ListRooms(
        self, request: pb.ListRoomsRequest, context: Context
    ) -> pb.ListRoomsResponse:
        async with self._guard(context, "ListRooms"):
            rooms = self._fleet.find_rooms(
                type=request.type if request.HasField("type") else None,
                labels=label_filter(request.labels),
                instance_id=request.instance_id if request.HasField("instance_id") else None,
            )
            where = RoomFilter(
                metadata=label_filter(request.metadata),
                min_free_seats=(
                    request.min_free_seats if request.HasField("min_free_seats") else None
                ),
                locked=request.locked if request.HasField("locked") else None,
            )
            if not where.empty:
                rooms = [room for room in rooms if where.keeps(room)]
            return self._rooms_page(rooms, request.limit, request.cursor)

    async def GetRoom(self, request: pb.GetRoomRequest, context: Context) -> pb.RoomInfo:
        async with self._guard(context, "GetRoom"):
            room = self._fleet.get_room(request.room_id)
            return room_message(found(room, ErrorCode.ROOM_NOT_FOUND))

    def _rooms_page(self, rooms: list[RoomInfo], limit: int, cursor: str) -> pb.ListRoomsResponse:
        rows = page(rooms, self._fleet.position, *_page_args(limit, cursor))
        return pb.ListRoomsResponse(
            rooms=[room_message(room) for room in rows.rows],
            count=rows.count,
            next_cursor=rows.next_cursor or "",
        )

    # --- control ----------------------------------------------------------------

    async def CreateRoom(self, request: pb.CreateRoomRequest, context: Context) -> pb.RoomInfo:
        async with self._guard(context, "CreateRoom", audited=True):
            placement = (
                placement_from_message(request.placement) if request.HasField("placement") else None
            )
            room = await self._fleet.create_room(
                request.type,
                room_id=request.room_id if request.HasField("room_id") else None,
                placement=placement,
                options=json_object(request.options, "options") if request.options else None,
            )
            return room_message(room)

    async def DestroyRoom(
        self, request: pb.DestroyRoomRequest, context: Context
    ) -> pb.DestroyRoomResponse:
        await self._control(context, "DestroyRoom", self._fleet.destroy_room, request.room_id)
        return pb.DestroyRoomResponse()

    async def DrainInstance(
        self, request: pb.DrainInstanceRequest, context: Context
    ) -> pb.DrainInstanceResponse:
        await self._control(
            context, "DrainInstance", self._fleet.drain_instance, request.instance_id
        )
        return pb.DrainInstanceResponse()

    async def UndrainInstance(
        self, request: pb.UndrainInstanceRequest, context: Context
    ) -> pb.UndrainInstanceResponse:
        await self._control(
            context, "UndrainInstance", self._fleet.undrain_instance, request.instance_id
        )
        return pb.UndrainInstanceResponse()

    async def _control(
        self, context: Context, method: str, call: Callable[[str], Awaitable[None]], target: str
    ) -> None:
        """An audited control call on one room or instance."""
        async with self._guard(context, method, audited=True):
            await call(target)

    # --- events -----------------------------------------------------------------

    async def WatchEvents(  # type: ignore[override]
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Serialized ``FleetEvent`` messages, each encoded once for every stream; the
        method is registered with a pass-through response serializer (:func:`method_handlers`).
        """
        async with self._guard(context, "WatchEvents") as ip:
            stream = self._hub.open()
            if stream is None:
                log.warning("watch stream limit reached ip=%s", ip)
                raise FleetError(ErrorCode.SSE_LIMIT, "too many event streams")
            try:
                # Initial metadata tells the client its subscription is live.
                await context.send_initial_metadata(())
                async for message in stream:
                    yield message
            finally:
                stream.close()
            if stream.overflowed:
                log.warning("watch stream fell behind ip=%s", ip)
                raise FleetError(ErrorCode.SSE_LIMIT, "event stream fell behind")


class _HandlerCapture:
    """Stands in for a server to collect the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service_name: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers.update(handlers)


def method_handlers(service: FleetControlService) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The generated ``FleetControl`` method handlers, except that ``WatchEvents`` sends
    its already serialized events as they are (no serializer per stream)."""
    capture = _HandlerCapture()
    pb_grpc.add_FleetControlServicer_to_server(service, cast(grpc.aio.Server, capture))
    capture.handlers["WatchEvents"] = grpc.unary_stream_rpc_method_handler(
        service.WatchEvents, request_deserializer=pb.WatchEventsRequest.FromString
    )
    return capture.handlers
