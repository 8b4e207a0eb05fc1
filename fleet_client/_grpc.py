"""The gRPC transport (``rivalis.fleet.v1.FleetControl``): one attempt per call on the
current node; URLs are ``host:port`` (``grpc://`` is accepted and dropped)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
from rivalis.fleet.v1 import control_pb2 as pb
from rivalis.fleet.v1 import control_pb2_grpc as pb_grpc

from fleet_agent import Capacity

from ._errors import FleetClientError, Unavailable, error_for
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
from ._nodes import Nodes
from ._transport import RoomFilter, SeatRequest

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub

__all__ = ["GrpcTransport"]

_NO_ANSWER: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
R = TypeVar("R")


class GrpcTransport:
    def __init__(self, nodes: Nodes, credential: str, timeout_s: float) -> None:
        self._nodes = nodes
        self._metadata = (("authorization", f"Bearer {credential}"),)
        self._timeout = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def open(self) -> None:
        pass  # channels are made per node on first use

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def _stub(self) -> FleetControlAsyncStub:
        target = self._nodes.current.removeprefix("grpc://")
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = grpc.aio.insecure_channel(target)
        return pb_grpc.FleetControlStub(channel)

    async def _call(self, call: Callable[[FleetControlAsyncStub], Awaitable[R]]) -> R:
        try:
            return await call(self._stub())
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, self._nodes.current) from None

    def _options(self) -> dict[str, Any]:
        return {"metadata": self._metadata, "timeout": self._timeout}

    async def stats(self) -> FleetStats:
        reply = await self._call(lambda s: s.GetStats(pb.GetStatsRequest(), **self._options()))
        return _stats(reply)

    async def instances(self) -> list[InstanceInfo]:
        reply = await self._call(
            lambda s: s.ListInstances(pb.ListInstancesRequest(), **self._options())
        )
        return [_instance(row) for row in reply.instances]

    async def rooms(self, where: RoomFilter) -> list[RoomInfo]:
        request = pb.ListRoomsRequest(
            type=where.type,
            instance_id=where.instance_id,
            labels=dict(where.labels),
            metadata=dict(where.metadata),
            min_free_seats=where.min_free_seats,
            locked=where.locked,
        )
        reply = await self._call(lambda s: s.ListRooms(request, **self._options()))
        return [_room(row) for row in reply.rooms]

    async def get_room(self, room_id: str) -> RoomInfo:
        request = pb.GetRoomRequest(room_id=room_id)
        return _room(await self._call(lambda s: s.GetRoom(request, **self._options())))

    async def create_room(
        self,
        type: str,
        room_id: str,
        options: Mapping[str, Any] | None,
        placement: Mapping[str, Any] | None,
    ) -> RoomInfo:
        request = pb.CreateRoomRequest(
            type=type,
            room_id=room_id,
            options=json.dumps(dict(options)) if options is not None else "",
            placement=_placement(placement) if placement is not None else None,
        )
        return _room(await self._call(lambda s: s.CreateRoom(request, **self._options())))

    async def destroy_room(self, room_id: str) -> None:
        request = pb.DestroyRoomRequest(room_id=room_id)
        await self._call(lambda s: s.DestroyRoom(request, **self._options()))

    async def drain(self, instance_id: str) -> None:
        request = pb.DrainInstanceRequest(instance_id=instance_id)
        await self._call(lambda s: s.DrainInstance(request, **self._options()))

    async def undrain(self, instance_id: str) -> None:
        request = pb.UndrainInstanceRequest(instance_id=instance_id)
        await self._call(lambda s: s.UndrainInstance(request, **self._options()))

    async def reserve_seats(self, request: SeatRequest) -> SeatGrant:
        create = None
        if request.create is not None:
            options = request.create.get("options")
            create = pb.SeatCreate(options=json.dumps(options) if options is not None else "")
        message = pb.ReserveSeatsRequest(
            type=request.type,
            seats=request.seats,
            metadata=json.dumps(dict(request.metadata)) if request.metadata is not None else "",
            placement=_placement(request.placement) if request.placement is not None else None,
            create=create,
            ttl_ms=request.ttl_ms or 0,
        )
        reply = await self._call(lambda s: s.ReserveSeats(message, **self._options()))
        return SeatGrant(
            _room(reply.room),
            SeatReservation(
                reply.reservation.id,
                reply.reservation.seats,
                reply.reservation.expires_at,
                reply.reservation.ticket,
            ),
            reply.created,
        )

    async def release_seats(self, reservation_id: str) -> None:
        request = pb.ReleaseSeatsRequest(reservation_id=reservation_id)
        await self._call(lambda s: s.ReleaseSeats(request, **self._options()))

    async def capacity(self, group_by: str | None, type: str | None) -> list[CapacityRow]:
        request = pb.GetCapacityRequest(group_by=group_by or "", type=type or "")
        reply = await self._call(lambda s: s.GetCapacity(request, **self._options()))
        return [_capacity(group, group_by) for group in reply.groups]

    async def cluster(self) -> ClusterInfo:
        reply = await self._call(lambda s: s.GetCluster(pb.GetClusterRequest(), **self._options()))
        leader = None
        if reply.HasField("leader"):
            one = reply.leader
            leader = ClusterLeader(one.id, one.url, one.grpc_url or None, one.agent_url, one.since)
        return ClusterInfo(
            reply.role,
            leader,
            reply.settled,
            tuple(ClusterMember(m.id, m.url, m.role) for m in reply.members),
        )

    async def events(self) -> AsyncIterator[FleetEvent | None]:
        call: Any = self._stub().WatchEvents(pb.WatchEventsRequest(), metadata=self._metadata)
        try:
            await call.initial_metadata()  # sent once the subscription is live
            if call.done():
                await call.read()  # refused before it was live: raises its status
            yield None
            async for message in call:
                yield _event(message)
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, self._nodes.current) from None
        finally:
            call.cancel()


def _failure(exc: grpc.aio.AioRpcError, node: str) -> FleetClientError:
    metadata = {key: value for key, value in (exc.trailing_metadata() or ())}
    cause = metadata.get("fleet-cause")
    if not isinstance(cause, str):
        sent = exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED or (
            exc.code() is grpc.StatusCode.UNAVAILABLE and "connect" not in (exc.details() or "")
        )
        if exc.code() in _NO_ANSWER:
            return Unavailable(
                "UNAVAILABLE", f"no answer from {node}: {exc.details()}", maybe_sent=sent
            )
        return error_for("INTERNAL", f"{exc.code().name}: {exc.details()}")
    retry_after = metadata.get("retry-after")
    leader = metadata.get("fleet-leader")
    return error_for(
        cause,
        exc.details() or cause,
        retry_after=float(retry_after) if isinstance(retry_after, str) else None,
        leader=leader if isinstance(leader, str) else None,
    )


def _placement(value: Mapping[str, Any]) -> pb.Placement:
    """The REST placement object (``instanceId``, ``processUid``, ``strategy``,
    ``labels``, ``force``, ``selectors``) as its message."""
    selectors = [
        pb.Selector(
            labels=dict(selector.get("labels") or {}),
            expressions=[
                pb.SelectorExpression(
                    key=expression["key"],
                    op=expression["op"],
                    values=list(expression.get("values") or ()),
                )
                for expression in selector.get("expressions") or ()
            ],
        )
        for selector in value.get("selectors") or ()
    ]
    return pb.Placement(
        instance_id=value.get("instanceId"),
        process_uid=value.get("processUid"),
        strategy=value.get("strategy"),
        labels=dict(value.get("labels") or {}),
        force=bool(value.get("force", False)),
        selectors=selectors,
    )


def _room(message: pb.RoomInfo) -> RoomInfo:
    return RoomInfo(
        id=message.id,
        type=message.type,
        connections=message.connections,
        instance_id=message.instance_id,
        endpoint_url=message.endpoint_url,
        local=message.local,
        metadata=json.loads(message.metadata) if message.metadata else {},
        max_connections=message.max_connections if message.HasField("max_connections") else None,
        locked=message.locked,
        reserved_seats=message.reserved_seats,
    )


def _instance(message: pb.InstanceInfo) -> InstanceInfo:
    capacity = message.capacity
    return InstanceInfo(
        id=message.id,
        name=message.name,
        process_uid=message.process_uid,
        endpoint_url=message.endpoint_url,
        labels=dict(message.labels),
        room_types=tuple(message.room_types),
        rooms=tuple(_room(room) for room in message.rooms),
        connections=message.connections,
        capacity=Capacity(
            capacity.max_connections if capacity.HasField("max_connections") else None,
            capacity.max_rooms if capacity.HasField("max_rooms") else None,
        ),
        auto_create=message.auto_create,
        status="draining" if message.status == "draining" else "active",
        last_sync_at=message.last_sync_at,
        agent_version=message.agent_version,
        protocol_version=message.protocol_version,
    )


def _stats(message: pb.FleetStats) -> FleetStats:
    return FleetStats(
        message.instances,
        message.rooms,
        message.connections,
        tuple(message.room_types),
        message.state_hash,
    )


def _capacity(group: pb.CapacityGroup, group_by: str | None) -> CapacityRow:
    labels: dict[str, str | None] = dict(group.labels)
    if group.label_missing and group_by is not None:
        labels[group_by] = None
    return CapacityRow(
        labels=labels,
        instances=group.instances,
        active=group.active,
        draining=group.draining,
        stale=group.stale,
        rooms=group.rooms,
        max_rooms=group.max_rooms if group.HasField("max_rooms") else None,
        free_room_slots=group.free_room_slots if group.HasField("free_room_slots") else None,
        connections=group.connections,
        free_connections=group.free_connections if group.HasField("free_connections") else None,
        reserved_seats=group.reserved_seats,
    )


def _event(message: pb.FleetEvent) -> FleetEvent:
    kind = message.WhichOneof("data")
    if kind == "instance":
        return FleetEvent(message.type, _instance(message.instance))
    if kind == "room":
        return FleetEvent(message.type, _room(message.room))
    return FleetEvent(message.type, _stats(message.stats))
