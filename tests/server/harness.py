"""A running orchestrator plus raw agents and an event recorder, for orchestrator tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from rivalis.fleet.v3 import agent_pb2

from fleet_server import Orchestrator
from fleet_server._events import EVENT_TYPES
from fleet_server._link import AgentLink
from tests.support.agents import RawAgents
from tests.support.orchestrators import link_of, running_orchestrator
from tests.support.raw_agent import RawAgent
from tests.support.waits import wait_for


@dataclass
class Recorded:
    type: str
    payload: Any
    at: float  # loop time of emission


class Harness(RawAgents):
    """Raw agents for one orchestrator (closed by the harness) and every event it emitted."""

    def __init__(self, orch: Orchestrator) -> None:
        super().__init__(orch)
        self.events: list[Recorded] = []

    def link(self, agent: RawAgent) -> AgentLink:
        return link_of(self.orch, agent.instance_id)

    def types(self, since: int = 0) -> list[str]:
        return [e.type for e in self.events[since:]]

    def of(self, event_type: str, since: int = 0) -> list[Any]:
        return [e.payload for e in self.events[since:] if e.type == event_type]

    def first(self, event_type: str, predicate: Callable[[Any], bool] = bool) -> Recorded | None:
        for event in self.events:
            if event.type == event_type and predicate(event.payload):
                return event
        return None

    async def applied(self, agent: RawAgent, timeout: float = 5.0) -> None:
        """Wait until the orchestrator applied the agent's current state: a later poll
        carries the agent's current hash."""
        digest = agent.snapshot_hash()
        start = len(agent.polls)
        await wait_for(
            lambda: any(
                p.HasField("known_hash") and p.known_hash == digest for p in agent.polls[start:]
            ),
            timeout,
        )

    async def settle_polls(self, agent: RawAgent, count: int = 2, timeout: float = 5.0) -> None:
        """Wait for ``count`` further polls of ``agent`` (each answered by auto-reply)."""
        start = len(agent.polls)
        await wait_for(lambda: len(agent.polls) >= start + count, timeout)


@contextlib.asynccontextmanager
async def harness(**options: Any) -> AsyncIterator[Harness]:
    options.setdefault("heartbeat_ms", 100)
    async with running_orchestrator(**options) as orch, Harness(orch) as h:
        loop = asyncio.get_running_loop()

        def recorder(event_type: str) -> Callable[[Any], None]:
            return lambda payload: h.events.append(Recorded(event_type, payload, loop.time()))

        for event_type in EVENT_TYPES:
            orch.on(event_type, recorder(event_type))
        yield h


def ack(cmd: agent_pb2.Command, **fields: Any) -> agent_pb2.Frame:
    return agent_pb2.Frame(ack=agent_pb2.Ack(cmd_id=cmd.cmd_id, **fields))


async def silent(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
    """An ``on_command`` hook that records the command and never acks."""
    return None
