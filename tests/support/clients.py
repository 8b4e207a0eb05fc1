"""Clients of an orchestrator's REST and gRPC APIs, with the admin key unless told otherwise."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
from multidict import CIMultiDictProxy
from rivalis.fleet.v1 import control_pb2_grpc
from yarl import URL

from fleet_agent import wire

from .keys import ADMIN

if TYPE_CHECKING:
    from rivalis.fleet.v1.control_pb2_grpc import FleetControlAsyncStub

AUTH = (("authorization", f"Bearer {ADMIN}"),)
"""gRPC call metadata carrying the admin key."""

_UNSET: Any = object()


def bearer(key: str | None = ADMIN) -> dict[str, str]:
    """The ``Authorization`` header for ``key``; none for ``None``."""
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def cause(self) -> str:
        value = self.json
        assert value["status"] == "rejected", value
        assert set(value) == {"status", "cause"}, value
        return str(value["cause"])

    @property
    def data(self) -> Any:
        value = self.json
        assert value["status"] == "OK", value
        return value["data"]


def cause(body: Any) -> str | None:
    """The ``cause`` of a rejection envelope; ``None`` for anything else."""
    if isinstance(body, dict) and body.get("status") == "rejected":
        value = body.get("cause")
        return str(value) if value is not None else None
    return None


class Http:
    """HTTP requests to the orchestrator on ``port`` of 127.0.0.1."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port

    def url(self, path: str) -> URL:
        """``path`` exactly as written: percent-escapes are sent, not re-encoded."""
        return URL(f"http://127.0.0.1:{self.port}{path}", encoded=True)

    def auth(self, key: str | None = ADMIN) -> dict[str, str]:
        return bearer(key)

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = ADMIN,
        headers: dict[str, str] | None = None,
        json: Any = _UNSET,
        data: Any = None,
        timeout: float | None = None,
    ) -> Reply:
        kwargs: dict[str, Any] = {"headers": {**self.auth(key), **(headers or {})}}
        if json is not _UNSET:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self.session.request(method, self.url(path), **kwargs) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", path, **kwargs)


class Rest(Http):
    """The REST ``/v1`` API as a matchmaker would call it: a failed connection is an
    answer too."""

    def __init__(self, session: aiohttp.ClientSession, port: int, key: str = ADMIN) -> None:
        super().__init__(session, port)
        self.key = key

    async def call(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """``(status, envelope)``; status 0 when the connection failed (no answer)."""
        try:
            reply = await self.request(method, path, key=self.key, json=body, timeout=timeout)
        except (aiohttp.ClientError, ConnectionError, TimeoutError):
            return 0, None
        return reply.status, (reply.json if reply.body else None)

    async def create(self, room_type: str, room_id: str, **placement: Any) -> tuple[int, Any]:
        body: dict[str, Any] = {"type": room_type, "roomId": room_id}
        if placement:
            body["placement"] = placement
        return await self.call("POST", "/v1/rooms", body)

    async def destroy(self, room_id: str) -> tuple[int, Any]:
        return await self.call("DELETE", f"/v1/rooms/{room_id}")

    async def rows(self, path: str) -> list[dict[str, Any]]:
        """The rows a list endpoint answers with."""
        status, body = await self.call("GET", path)
        assert status == 200, (status, body)
        rows: list[dict[str, Any]] = body["data"]
        return rows

    async def rooms(self) -> list[dict[str, Any]]:
        return await self.rows("/v1/rooms")

    async def instances(self) -> list[dict[str, Any]]:
        return await self.rows("/v1/instances")


def grpc_channel(port: int | None) -> grpc.aio.Channel:
    """An insecure channel to the gRPC port ``port`` of 127.0.0.1 (an orchestrator's
    ``grpc_port``: ``None`` when it serves no gRPC)."""
    assert port is not None, "no gRPC port"
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def control_stub(port: int | None) -> AsyncIterator[FleetControlAsyncStub]:
    """A FleetControl stub over its own channel, closed on exit."""
    async with grpc_channel(port) as channel:
        yield control_pb2_grpc.FleetControlStub(channel)


def grpc_cause(error: grpc.aio.AioRpcError) -> str | None:
    """The ``fleet-cause`` trailing metadata of a failed call."""
    for key, value in error.trailing_metadata() or ():
        if key == "fleet-cause":
            return value if isinstance(value, str) else value.decode()
    return None


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str | None]:
    """Await a gRPC call that must fail; its status code and fleet cause."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), grpc_cause(error)
    raise AssertionError("the call succeeded")


async def handshake_status(port: int, credential: str) -> int:
    """The HTTP status of an agent upgrade offering ``credential`` to the orchestrator
    on ``port`` of 127.0.0.1: 101 when it is accepted (the socket is closed at once)."""
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(
                f"http://127.0.0.1:{port}/", protocols=(wire.SUBPROTOCOL, credential)
            )
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101
