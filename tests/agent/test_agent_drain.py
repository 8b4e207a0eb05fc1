"""Drain, await_empty, destroy subscription and graceful shutdown (SPEC §13.4; 91, 92, 96)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from fleet_agent import FleetAgent
from fleet_agent._errors import AgentTimeoutError, ConnectionClosedError
from tests.support.waits import wait_for

from .fake_orchestrator import FakeOrchestrator
from .support import CountingRooms, join

MakeAgent = Callable[..., FleetAgent]


def signal_handlers() -> dict[int, object]:
    handlers: dict[int, object] = asyncio.get_running_loop()._signal_handlers  # type: ignore[attr-defined]
    return handlers


async def test_drain_flips_at_once_and_resolves_on_the_echo(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    link = await join(agent, fake)
    draining = asyncio.create_task(agent.drain())
    await wait_for(lambda: agent.status == "draining")
    await link.assert_silent(0.05)
    state = await link.poll(status="active")
    assert state.status == "draining"
    await asyncio.sleep(0.02)
    assert not draining.done()
    await link.poll(status="draining")
    await asyncio.wait_for(draining, 5)

    undraining = asyncio.create_task(agent.undrain())
    await wait_for(lambda: agent.status == "connected")
    state = await link.poll(status="draining")
    assert state.status == "active"
    await asyncio.sleep(0.02)
    assert not undraining.done()
    await link.poll(status="active")
    await asyncio.wait_for(undraining, 5)


async def test_drain_and_undrain_commands_flip_the_status(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    link = await join(agent, fake)
    assert (await link.command("drain")).ok
    assert agent.status == "draining"
    assert (await link.poll()).status == "draining"
    assert (await link.command("undrain")).ok
    assert agent.status == "connected"
    assert (await link.poll()).status == "active"


async def test_drain_waiters_fail_on_connection_loss_and_disconnect(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    link = await join(agent, fake)
    draining = asyncio.create_task(agent.drain())
    await wait_for(lambda: agent.status == "draining")
    await link.close()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(draining, 5)
    again = await fake.next_link()
    await again.hello("i_2")
    await wait_for(lambda: agent.status == "draining")
    assert (await again.poll()).status == "draining"
    undraining = asyncio.create_task(agent.undrain())
    await wait_for(lambda: agent.status == "connected")
    await agent.disconnect()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(undraining, 5)


async def test_drain_while_not_connected_is_reported_at_the_next_hello(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    with pytest.raises(ConnectionClosedError):
        await agent.drain()
    assert agent.status == "closed"
    link = await join(agent, fake)
    assert agent.status == "draining"
    assert (await link.poll()).status == "draining"


async def test_await_empty_rechecks_until_every_room_is_empty(
    make_agent: MakeAgent, rooms: CountingRooms
) -> None:
    agent = make_agent()
    await agent.await_empty(timeout_ms=1000)
    room = await rooms.create("match", "r1")
    room.connections = 2
    with pytest.raises(TimeoutError) as info:
        await agent.await_empty(timeout_ms=50)
    assert isinstance(info.value, AgentTimeoutError)
    waiting = asyncio.create_task(agent.await_empty())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    room.connections = 0
    await asyncio.wait_for(waiting, 2)


async def test_disconnect_detaches_the_destroy_subscription_and_connect_restores_it(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    agent = make_agent()
    assert rooms.subscriptions == 0
    link = await join(agent, fake)
    assert rooms.subscriptions == 1
    assert (await link.command("create", room_id="r1", room_type="match")).ok
    await agent.disconnect()
    assert rooms.subscriptions == 0
    link = await join(agent, fake, "i_2")
    assert rooms.subscriptions == 1
    await agent.connect()
    assert rooms.subscriptions == 1
    await rooms.destroy("r1")
    await rooms.create("match", "r1")
    assert [r.origin for r in (await link.poll()).rooms] == ["local"]


async def test_graceful_shutdown_on_a_signal(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    agent = make_agent()
    link = await join(agent, fake)
    room = await rooms.create("match", "r1")
    room.connections = 1
    agent.enable_graceful_shutdown(empty_timeout_ms=5000)
    agent.enable_graceful_shutdown(empty_timeout_ms=5000)
    handlers = signal_handlers()
    assert signal.SIGTERM in handlers and signal.SIGINT in handlers

    os.kill(os.getpid(), signal.SIGTERM)
    await wait_for(lambda: agent.status == "draining")
    assert signal.SIGTERM not in signal_handlers() and signal.SIGINT not in signal_handlers()
    assert (await link.poll(status="draining")).status == "draining"
    await asyncio.sleep(0.05)
    assert agent.status == "draining" and rooms.shutdowns == []
    room.connections = 0
    await wait_for(lambda: rooms.shutdowns)
    assert rooms.shutdowns == ["closed"]
    assert agent.status == "closed"
    await wait_for(link.closed.is_set)
    assert link.ws.close_code == 1000
    await wait_for(lambda: len(rooms) == 0 and agent._shutdown_task is None)


async def test_graceful_shutdown_goes_on_when_steps_fail(
    make_agent: MakeAgent, rooms: CountingRooms, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    room = await rooms.create("match", "r1")
    room.connections = 3
    agent.enable_graceful_shutdown(empty_timeout_ms=50)
    os.kill(os.getpid(), signal.SIGINT)
    await wait_for(lambda: rooms.shutdowns)
    assert rooms.shutdowns == ["closed"]
    await wait_for(lambda: agent._shutdown_task is None)
    assert any("graceful shutdown" in r.getMessage() for r in caplog.records)
    assert signal.SIGINT not in signal_handlers()


async def test_disconnect_removes_the_signal_handlers(make_agent: MakeAgent) -> None:
    agent = make_agent()
    agent.enable_graceful_shutdown()
    assert signal.SIGTERM in signal_handlers()
    await agent.disconnect()
    assert signal.SIGTERM not in signal_handlers() and signal.SIGINT not in signal_handlers()
