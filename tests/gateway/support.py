"""A real orchestrator with the REST API on an ephemeral port, an HTTP client and raw agents."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from fleet_server import Orchestrator
from tests.server.conftest import running_orchestrator
from tests.server.raw_agent import ADMIN, KEY, RawAgent, wait_for

__all__ = ["ADMIN", "KEY", "Gateway", "Reply", "SseReader", "running_gateway"]

_UNSET: Any = object()


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


class Gateway:
    """Talks to one running orchestrator over real HTTP."""

    def __init__(self, orch: Orchestrator, session: aiohttp.ClientSession) -> None:
        self.orch = orch
        self.session = session
        self._agents: list[RawAgent] = []

    def url(self, path: str) -> URL:
        """``path`` exactly as written: percent-escapes are sent, not re-encoded."""
        return URL(f"http://127.0.0.1:{self.orch.port}{path}", encoded=True)

    @property
    def agent_url(self) -> str:
        return f"ws://127.0.0.1:{self.orch.port}/"

    def auth(self, key: str | None = ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key is not None else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = ADMIN,
        headers: dict[str, str] | None = None,
        json: Any = _UNSET,
        data: Any = None,
    ) -> Reply:
        all_headers = {**self.auth(key), **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers}
        if json is not _UNSET:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.url(path), **kwargs) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", path, **kwargs)

    async def agent(self, **fields: Any) -> RawAgent:
        """A raw agent that is in the read model."""
        agent = RawAgent(self.agent_url, **fields)
        await agent.connect()
        self._agents.append(agent)
        await wait_for(lambda: self.orch.fleet.get_instance(agent.instance_id) is not None)
        return agent

    async def close(self) -> None:
        for agent in self._agents:
            await agent.close()


@contextlib.asynccontextmanager
async def running_gateway(**options: Any) -> AsyncIterator[Gateway]:
    options.setdefault("api", True)
    options.setdefault("heartbeat_ms", 100)
    async with (
        running_orchestrator(**options) as orch,
        aiohttp.ClientSession() as session,
    ):
        gateway = Gateway(orch, session)
        try:
            yield gateway
        finally:
            await gateway.close()


class SseReader:
    """Reads an event stream frame by frame (a frame: the lines before a blank line)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def frame(self, timeout: float = 5.0) -> list[str]:
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("stream ended")
                line = raw.decode().rstrip("\n")
                if line == "":
                    if lines:
                        return lines
                    continue
                lines.append(line)

    async def event(self, event_type: str, timeout: float = 5.0) -> Any:
        """The payload of the next ``event_type`` event, skipping pings and other events."""
        async with asyncio.timeout(timeout):
            while True:
                lines = await self.frame()
                if lines[0] == f"event: {event_type}":
                    assert len(lines) == 2 and lines[1].startswith("data: "), lines
                    return json.loads(lines[1].removeprefix("data: "))

    async def ended(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            try:
                while await self.response.content.readline():
                    pass
            except aiohttp.ClientPayloadError:
                pass
        return True
