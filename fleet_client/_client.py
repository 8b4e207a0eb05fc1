"""``FleetClient``: retries that are safe, creates that never duplicate, the leader
followed, and an event stream that survives a failover (docs/fleet-client.md)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity import stop_after_delay as _stop_after_delay

from ._errors import AMBIGUOUS, FleetClientError, NotFound, OutcomeUnknown, Unavailable
from ._models import (
    CapacityRow,
    ClusterInfo,
    FleetEvent,
    FleetStats,
    InstanceInfo,
    RoomInfo,
    SeatGrant,
)
from ._nodes import Nodes
from ._transport import RoomFilter, SeatRequest, Transport

__all__ = ["FleetClient"]

log = logging.getLogger("fleet.client")

T = TypeVar("T")
TransportName = Literal["grpc", "http"]

_BACKOFF_START_S: Final = 0.05
_BACKOFF_MAX_S: Final = 2.0
_RESOLVE_STEP_S: Final = 0.2
_PROBE_PROCESS: Final = "p_fleet_client_probe"  # no process has this uid: pins nowhere


def new_room_id() -> str:
    """``c`` + 20 random base64url characters: matches ``^[A-Za-z0-9_-]{1,64}$``."""
    return "c" + base64.urlsafe_b64encode(os.urandom(15)).decode("ascii")


class FleetClient:
    """An async client for the control API, REST (``transport="http"``, URLs like
    ``http://host:7350``) or gRPC (``transport="grpc"``, ``host:port``).

    ``urls`` are the orchestrator nodes (one, or every node of a cluster);
    ``token_or_key`` an admin key or an API token. Every call is retried while the
    answer says it may succeed later (at most ``attempts`` tries within ``deadline_s``),
    following the leader; creates never make a second room (docs/fleet-client.md §3).
    """

    def __init__(
        self,
        urls: Sequence[str],
        token_or_key: str,
        transport: TransportName = "http",
        *,
        attempts: int = 20,
        deadline_s: float = 30.0,
        timeout_s: float = 15.0,
        resolve_timeout_s: float = 90.0,
    ) -> None:
        if isinstance(urls, str):
            urls = [urls]
        self._nodes = Nodes(urls)
        self._transport: Transport = _new_transport(transport, self._nodes, token_or_key, timeout_s)
        self._attempts = attempts
        self._deadline_s = deadline_s
        self._resolve_timeout_s = resolve_timeout_s

    @property
    def url(self) -> str:
        """The node the client talks to now."""
        return self._nodes.current

    async def __aenter__(self) -> Self:
        await self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    # --- reads ------------------------------------------------------------------------

    async def stats(self) -> FleetStats:
        return await self._retried(self._transport.stats)

    async def instances(self) -> list[InstanceInfo]:
        return await self._retried(self._transport.instances)

    async def rooms(
        self,
        *,
        type: str | None = None,
        instance_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        min_free_seats: int | None = None,
        locked: bool | None = None,
    ) -> list[RoomInfo]:
        where = RoomFilter(
            type, instance_id, dict(labels or {}), dict(metadata or {}), min_free_seats, locked
        )
        return await self._retried(lambda: self._transport.rooms(where))

    async def get_room(self, room_id: str) -> RoomInfo:
        return await self._retried(lambda: self._transport.get_room(room_id))

    async def capacity(
        self, group_by: str | None = None, type: str | None = None
    ) -> list[CapacityRow]:
        return await self._retried(lambda: self._transport.capacity(group_by, type))

    async def cluster(self) -> ClusterInfo:
        return await self._retried(self._transport.cluster)

    # --- control ----------------------------------------------------------------------

    async def create_room(
        self,
        type: str,
        room_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        placement: Mapping[str, Any] | None = None,
    ) -> RoomInfo:
        """Create a room (its id generated here when none is given, so every retry is
        the same create). After an answer that leaves the outcome open (504, 502, a
        lost connection) the create is never sent again: the client resolves it to the
        room once listed, or raises :class:`OutcomeUnknown` (docs/fleet-client.md §3)."""
        room_id = room_id if room_id is not None else new_room_id()
        try:
            return await self._retried(
                lambda: self._transport.create_room(type, room_id, options, placement),
                idempotent=False,
            )
        except FleetClientError as exc:
            if exc.code not in AMBIGUOUS and not (isinstance(exc, Unavailable) and exc.maybe_sent):
                raise
            log.warning("create outcome open room=%s code=%s: resolving", room_id, exc.code)
            return await self._resolve(type, room_id, exc)

    async def destroy_room(self, room_id: str) -> None:
        await self._retried(lambda: self._transport.destroy_room(room_id))

    async def drain(self, instance_id: str) -> None:
        await self._retried(lambda: self._transport.drain(instance_id))

    async def undrain(self, instance_id: str) -> None:
        await self._retried(lambda: self._transport.undrain(instance_id))

    async def reserve_seats(
        self,
        type: str,
        seats: int = 1,
        *,
        metadata: Mapping[str, Any] | None = None,
        placement: Mapping[str, Any] | None = None,
        create: Mapping[str, Any] | None = None,
        ttl_ms: int | None = None,
    ) -> SeatGrant:
        """Reserve ``seats`` in the fullest fitting room (or a new one with ``create``,
        e.g. ``{"options": {...}}``); the grant's ticket goes to the player."""
        request = SeatRequest(type, seats, metadata, placement, create, ttl_ms)
        return await self._retried(lambda: self._transport.reserve_seats(request), idempotent=False)

    async def release_seats(self, reservation_id: str) -> None:
        await self._retried(lambda: self._transport.release_seats(reservation_id))

    # --- events -----------------------------------------------------------------------

    async def watch(self) -> AsyncIterator[FleetEvent]:
        """Fleet events, across reconnections and failovers: after each (re)connection
        the rooms are re-read, so a room that appeared or went meanwhile yields its
        ``room:create`` / ``room:destroy`` (``resync=True``), then a ``sync`` says the
        view is whole again. Runs until the consumer stops iterating."""
        known: dict[str, RoomInfo] = {}
        failures = 0
        while True:
            stream = self._transport.events()
            try:
                async for event in stream:
                    if event is None:  # the stream is live: now re-read the fleet
                        for made_up in await self._resync(known):
                            yield made_up
                        failures = 0
                        continue
                    for seen in _seen(event, known):
                        yield seen
            except FleetClientError as exc:
                if not exc.retryable:
                    raise  # a refused credential, say: reconnecting cannot help
                failures += 1
                self._move(exc)
                await asyncio.sleep(_wait_for(exc, failures))
            finally:
                await _close(stream)

    async def _resync(self, known: dict[str, RoomInfo]) -> list[FleetEvent]:
        listed = await self._retried(lambda: self._transport.rooms(RoomFilter()))
        rooms = {room.id: room for room in listed}
        stats = await self._retried(self._transport.stats)
        events = [
            FleetEvent("room:create", room, resync=True)
            for room_id, room in rooms.items()
            if room_id not in known
        ]
        events += [
            FleetEvent("room:destroy", room, resync=True)
            for room_id, room in known.items()
            if room_id not in rooms
        ]
        known.clear()
        known.update(rooms)
        return [*events, FleetEvent("sync", stats, resync=True)]

    # --- retries ----------------------------------------------------------------------

    async def _retried(self, call: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        """``call`` retried while the answer says it may succeed later; a call that may
        have been served without an answer is retried only when ``idempotent``."""

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, Unavailable) and exc.maybe_sent and not idempotent:
                return False  # it may have been served: the caller decides
            return isinstance(exc, FleetClientError) and exc.retryable

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts) | _stop_after_delay(self._deadline_s),
            wait=_wait,
            retry=retry_if_exception(retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )

        async def attempt() -> T:
            return await call()

        return await retrying(attempt)

    async def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, FleetClientError):
            self._move(exc)

    def _move(self, exc: FleetClientError) -> None:
        """Follow a ``NOT_LEADER`` hint; leave a node that did not answer."""
        if exc.code == "NOT_LEADER":
            self._nodes.follow(exc.leader)
        elif isinstance(exc, Unavailable):
            self._nodes.advance()

    async def _resolve(self, type: str, room_id: str, cause: FleetClientError) -> RoomInfo:
        """The room a create with an open outcome made, or :class:`OutcomeUnknown`."""
        deadline = time.monotonic() + self._resolve_timeout_s
        probe: Mapping[str, Any] = {"processUid": _PROBE_PROCESS}
        while time.monotonic() < deadline:
            try:
                return await self._retried(lambda: self._transport.get_room(room_id))
            except NotFound:
                pass
            try:
                await self._retried(lambda: self._transport.create_room(type, room_id, None, probe))
            except FleetClientError as exc:
                if exc.code not in ("ROOM_EXISTS", "INSTANCE_NOT_FOUND", "NO_CANDIDATE"):
                    if not exc.retryable and exc.code not in AMBIGUOUS:
                        raise
                elif exc.code != "ROOM_EXISTS":  # the id is free, and no room has it
                    raise OutcomeUnknown(
                        "OUTCOME_UNKNOWN",
                        f"room {room_id} was not created, or left with its game server "
                        f"(after {cause.code}); its id is free again",
                    ) from cause
            await asyncio.sleep(_RESOLVE_STEP_S)
        raise OutcomeUnknown(
            "OUTCOME_UNKNOWN",
            f"room {room_id}: not listed within {self._resolve_timeout_s:g} s (after {cause.code})",
        ) from cause


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _seen(event: FleetEvent, known: dict[str, RoomInfo]) -> list[FleetEvent]:
    """``event`` unless it repeats what the client already yielded for a room."""
    data = event.data
    if event.type == "room:create" and isinstance(data, RoomInfo):
        if data.id in known:
            known[data.id] = data
            return []
        known[data.id] = data
    elif event.type == "room:destroy" and isinstance(data, RoomInfo):
        if known.pop(data.id, None) is None:
            return []
    elif event.type == "room:update" and isinstance(data, RoomInfo):
        known[data.id] = data
    return [event]


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(exc, FleetClientError):
        return 0.0
    return _wait_for(exc, state.attempt_number)


def _wait_for(exc: FleetClientError, attempt: int) -> float:
    """A ``NOT_LEADER`` with a hint is followed at once on the first two tries (later,
    the hint may name a leader that just died: back off); otherwise the larger of
    ``Retry-After`` and an exponential backoff with full jitter."""
    if exc.code == "NOT_LEADER" and exc.leader and attempt <= 2:
        return 0.0
    backoff = random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_START_S * 2 ** (attempt - 1)))
    return max(exc.retry_after or 0.0, backoff)


def _new_transport(
    name: TransportName, nodes: Nodes, credential: str, timeout_s: float
) -> Transport:
    if name == "http":
        from ._http import HttpTransport

        return HttpTransport(nodes, credential, timeout_s)
    if name == "grpc":
        from ._grpc import GrpcTransport

        return GrpcTransport(nodes, credential, timeout_s)
    raise ValueError("transport must be 'grpc' or 'http'")
