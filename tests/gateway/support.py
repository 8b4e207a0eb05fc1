"""A real orchestrator with the REST API on an ephemeral port, an HTTP client and raw agents."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from fleet_server import Orchestrator
from tests.support.agents import RawAgents
from tests.support.clients import Http
from tests.support.orchestrators import running_orchestrator
from tests.support.raw_agent import RawAgent

__all__ = ["Calls", "Gateway", "SseReader", "running_gateway"]

Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]
"""Recorded calls: ``(args, kwargs)`` each."""


class Gateway(Http):
    """Talks to one running orchestrator over real HTTP; its raw agents close with it."""

    def __init__(self, orch: Orchestrator, session: aiohttp.ClientSession) -> None:
        super().__init__(session, orch.port)
        self.orch = orch
        self.agents = RawAgents(orch)

    @property
    def agent_url(self) -> str:
        return self.agents.url

    async def agent(self, **fields: Any) -> RawAgent:
        """A raw agent that is in the read model."""
        return await self.agents.join(**fields)

    async def close(self) -> None:
        await self.agents.close()


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
