"""Test hosts and helpers shared by the agent tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fleet_agent import Backoff, FleetAgent, RoomManager

from .fake_orchestrator import FakeOrchestrator, Link

FAST = Backoff(initial_ms=10, max_ms=50)


class CountingRooms(RoomManager):
    """A RoomManager that counts live destroy subscriptions and shutdown() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions = 0
        self.shutdowns: list[str] = []
        self.agent: FleetAgent | None = None

    def add_destroy_listener(self, listener: Any) -> Callable[[], None]:
        unsubscribe = super().add_destroy_listener(listener)
        self.subscriptions += 1

        def counted() -> None:
            self.subscriptions -= 1
            unsubscribe()

        return counted

    async def shutdown(self) -> None:
        self.shutdowns.append(str(self.agent.status) if self.agent else "")
        await super().shutdown()


async def join(agent: FleetAgent, fake: FakeOrchestrator, instance_id: str = "i_1") -> Link:
    """Connect ``agent`` through the fake: accept, send Hello, await ``connect()``."""
    connecting = asyncio.create_task(agent.connect())
    link = await fake.next_link()
    await link.hello(instance_id)
    await asyncio.wait_for(connecting, 5)
    return link
