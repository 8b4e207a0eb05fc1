"""The REST ``/v1`` transport (aiohttp): one attempt per call on the current node."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import aiohttp

from ._errors import FleetClientError, Unavailable, error_for
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
from ._transport import RoomFilter, SeatRequest

__all__ = ["HttpTransport"]

_LEADER_HEADER: Final = "Fleet-Leader"


class HttpTransport:
    def __init__(self, nodes: Nodes, credential: str, timeout_s: float) -> None:
        self._nodes = nodes
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("FleetClient is not open: use 'async with FleetClient(...)'")
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """The envelope's ``data`` of a 2xx answer; a :class:`FleetClientError` otherwise."""
        url = self._nodes.current + path
        try:
            async with self._http.request(
                method, url, params=params, json=body, timeout=self._timeout
            ) as reply:
                raw = await reply.read()
                status, headers = reply.status, reply.headers
        except aiohttp.ClientConnectorError as exc:
            raise Unavailable("UNAVAILABLE", f"cannot connect to {url}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise Unavailable(
                "UNAVAILABLE", f"no answer from {url}: {type(exc).__name__}", maybe_sent=True
            ) from None
        try:
            payload: Any = json.loads(raw) if raw else {}
        except ValueError:
            payload = {}
        if 200 <= status < 300:
            return payload.get("data") if isinstance(payload, dict) else None
        raise _failure(status, headers, payload)

    async def stats(self) -> FleetStats:
        return FleetStats.from_json(await self._call("GET", "/v1/stats"))

    async def instances(self) -> list[InstanceInfo]:
        return [InstanceInfo.from_json(row) for row in await self._call("GET", "/v1/instances")]

    async def rooms(self, where: RoomFilter) -> list[RoomInfo]:
        params: list[tuple[str, str]] = []
        if where.type is not None:
            params.append(("type", where.type))
        if where.instance_id is not None:
            params.append(("instanceId", where.instance_id))
        params += [("label", f"{k}:{v}") for k, v in where.labels.items()]
        params += [("metadata", f"{k}:{v}") for k, v in where.metadata.items()]
        if where.min_free_seats is not None:
            params.append(("minFreeSeats", str(where.min_free_seats)))
        if where.locked is not None:
            params.append(("locked", "true" if where.locked else "false"))
        rows = await self._call("GET", "/v1/rooms", params=params)
        return [RoomInfo.from_json(row) for row in rows]

    async def get_room(self, room_id: str) -> RoomInfo:
        return RoomInfo.from_json(await self._call("GET", f"/v1/rooms/{room_id}"))

    async def create_room(
        self,
        type: str,
        room_id: str,
        options: Mapping[str, Any] | None,
        placement: Mapping[str, Any] | None,
    ) -> RoomInfo:
        body: dict[str, Any] = {"type": type, "roomId": room_id}
        if options is not None:
            body["options"] = dict(options)
        if placement is not None:
            body["placement"] = dict(placement)
        return RoomInfo.from_json(await self._call("POST", "/v1/rooms", body=body))

    async def destroy_room(self, room_id: str) -> None:
        await self._call("DELETE", f"/v1/rooms/{room_id}")

    async def drain(self, instance_id: str) -> None:
        await self._call("POST", f"/v1/instances/{instance_id}/drain")

    async def undrain(self, instance_id: str) -> None:
        await self._call("POST", f"/v1/instances/{instance_id}/undrain")

    async def reserve_seats(self, request: SeatRequest) -> SeatGrant:
        body: dict[str, Any] = {"type": request.type, "seats": request.seats}
        for name, value in (
            ("metadata", request.metadata),
            ("placement", request.placement),
            ("create", request.create),
            ("ttlMs", request.ttl_ms),
        ):
            if value is not None:
                body[name] = value
        return SeatGrant.from_json(await self._call("POST", "/v1/seats", body=body))

    async def release_seats(self, reservation_id: str) -> None:
        await self._call("DELETE", f"/v1/seats/{reservation_id}")

    async def capacity(self, group_by: str | None, type: str | None) -> list[CapacityRow]:
        params = [(k, v) for k, v in (("groupBy", group_by), ("type", type)) if v is not None]
        rows = await self._call("GET", "/v1/capacity", params=params)
        return [CapacityRow.from_json(row) for row in rows]

    async def cluster(self) -> ClusterInfo:
        return ClusterInfo.from_json(await self._call("GET", "/v1/cluster"))

    async def events(self) -> AsyncIterator[FleetEvent | None]:
        """Server-Sent Events from ``GET /v1/events`` until the stream ends."""
        url = self._nodes.current + "/v1/events"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total)
        try:
            async with self._http.get(
                url, headers={"Accept": "text/event-stream"}, timeout=timeout
            ) as reply:
                if reply.status != 200:
                    payload: Any = {}
                    with contextlib.suppress(ValueError):
                        payload = json.loads(await reply.read())
                    raise _failure(reply.status, reply.headers, payload)
                yield None  # subscribed: what happens from now on reaches this stream
                async for event in _sse_events(reply.content):
                    yield event
        except aiohttp.ClientConnectorError as exc:
            raise Unavailable("UNAVAILABLE", f"cannot connect to {url}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise Unavailable("UNAVAILABLE", f"event stream cut: {type(exc).__name__}") from None


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[FleetEvent]:
    event_type = ""
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if event_type and data:
                yield FleetEvent.from_json(event_type, json.loads("\n".join(data)))
            event_type, data = "", []
        elif line.startswith("event:"):
            event_type = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def _failure(status: int, headers: Mapping[str, str], payload: Any) -> FleetClientError:
    body = payload if isinstance(payload, dict) else {}
    code = body.get("cause")
    if not isinstance(code, str):
        code = "INTERNAL" if status >= 500 else "VALIDATION"
    retry_after = headers.get("Retry-After")
    leader = body.get("leader") or headers.get(_LEADER_HEADER)
    return error_for(
        code,
        f"HTTP {status}",
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        leader=leader if isinstance(leader, str) else None,
    )
