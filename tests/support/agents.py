"""Factories for agents attached to an orchestrator: raw protocol-level ones and real
:class:`~fleet_agent.FleetAgent`\\ s, each closed by the factory at the end."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any, Self, TypeVar

from fleet_agent import Backoff, FleetAgent, Room, RoomHost, RoomManager
from fleet_server import Orchestrator

from .keys import KEY
from .orchestrators import agent_url, listed
from .raw_agent import RawAgent

FAST = Backoff(initial_ms=20, max_ms=200)
"""The reconnect backoff of agents that talk to a real orchestrator in tests."""

M = TypeVar("M", bound=RoomManager)


class _Factory(abc.ABC):
    """An async context manager that closes what it made on exit."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RawAgents(_Factory):
    """Makes :class:`RawAgent`\\ s for one orchestrator; :meth:`close` (or leaving
    ``async with``) closes every one.

    Calling the factory, ``await agents(name=..., ...)``, connects an agent and waits
    until it is in the read model."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self.agents: list[RawAgent] = []

    @property
    def url(self) -> str:
        return agent_url(self.orch.port)

    def agent(self, **fields: Any) -> RawAgent:
        """A RawAgent for this orchestrator, not yet connected."""
        agent = RawAgent(self.url, **fields)
        self.agents.append(agent)
        return agent

    async def connect(self, **fields: Any) -> RawAgent:
        agent = self.agent(**fields)
        await agent.connect()
        return agent

    async def join(self, **fields: Any) -> RawAgent:
        """Connect an agent and wait until it is in the read model."""
        agent = await self.connect(**fields)
        await self.joined(agent)
        return agent

    async def joined(self, agent: RawAgent, timeout: float = 5.0) -> None:
        await listed(self.orch, agent.instance_id, timeout)

    async def __call__(self, **fields: Any) -> RawAgent:
        return await self.join(**fields)

    async def close(self) -> None:
        for agent in self.agents:
            await agent.close()


class SlowRoom(Room):
    """A room whose creation takes an hour: its create command is never acknowledged."""

    async def on_create(self) -> None:
        await asyncio.sleep(3600)


def define_rooms(manager: M, *room_types: str, **factories: type[Room]) -> M:
    """``manager`` with each of ``room_types`` defined as a plain :class:`Room`, and each
    keyword as that room class."""
    for room_type in room_types:
        manager.define(room_type, Room)
    for room_type, factory in factories.items():
        manager.define(room_type, factory)
    return manager


def fleet_agent(
    host: RoomHost, *, url: str | Sequence[str], name: str = "eu1", **options: Any
) -> FleetAgent:
    """A FleetAgent over ``host`` dialing ``url`` (one URL or a list): by default with
    the agent key, the ``FAST`` backoff and an endpoint named after the agent."""
    options.setdefault("key", KEY)
    options.setdefault("endpoint_url", f"ws://{name}.example:9000")
    options.setdefault("backoff", FAST)
    return FleetAgent(host, url=url, name=name, **options)


class FleetAgents(_Factory):
    """Makes FleetAgents with shared defaults (see :func:`fleet_agent`); :meth:`close` (or
    leaving ``async with``) disconnects every one."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = defaults
        self.agents: list[FleetAgent] = []

    def __call__(self, host: RoomHost, **options: Any) -> FleetAgent:
        agent = fleet_agent(host, **{**self.defaults, **options})
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.disconnect()
