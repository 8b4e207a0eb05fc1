"""FleetAgent connection lifecycle over real sockets (SPEC §13.2; catalogue 87, 93-95)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import pytest

from fleet_agent import FleetAgent, FleetAgentError, wire
from fleet_agent._errors import AgentTimeoutError, ConnectionClosedError, ProtocolMismatchError
from tests.support.ports import free_port
from tests.support.waits import wait_for

from .fake_orchestrator import KEY, FakeOrchestrator
from .support import join

MakeAgent = Callable[..., FleetAgent]


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fleet.agent" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


def assert_key_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.args)


async def test_a_closed_port_keeps_retrying_until_disconnect(
    make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = make_agent(url=f"ws://127.0.0.1:{free_port()}")
    started = asyncio.get_running_loop().time()
    connecting = asyncio.create_task(agent.connect())
    await wait_for(lambda: len(warnings_about(caplog, "connect failed")) >= 2)
    await asyncio.sleep(max(0.0, 0.2 - (asyncio.get_running_loop().time() - started)))
    assert not connecting.done()
    assert agent.status == "connecting"
    await agent.disconnect()
    with pytest.raises(ConnectionClosedError):
        await connecting
    assert agent.status == "closed"
    assert_key_never_logged(caplog)


async def test_connect_timeout_raises_closes_and_stops_retrying(
    make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent(url=f"ws://127.0.0.1:{free_port()}", connect_timeout_ms=60)
    with pytest.raises(TimeoutError) as info:
        await agent.connect()
    assert isinstance(info.value, AgentTimeoutError)
    assert isinstance(info.value, FleetAgentError)
    assert agent.status == "closed"
    attempts = len(warnings_about(caplog, "connect failed"))
    assert attempts >= 1
    await asyncio.sleep(0.15)
    assert len(warnings_about(caplog, "connect failed")) == attempts


async def test_connect_resolves_on_hello_with_the_key_only_in_the_subprotocols(
    make_agent: MakeAgent, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = make_agent()
    assert agent.status == "closed"
    connecting = asyncio.create_task(agent.connect())
    link = await fake.next_link()
    await asyncio.sleep(0.02)
    assert not connecting.done() and agent.status == "connecting"
    await link.hello("i_first", heartbeat_ms=7000)
    await asyncio.wait_for(connecting, 5)
    assert agent.status == "connected" and agent.instance_id == "i_first"
    assert link.ws.ws_protocol == wire.SUBPROTOCOL
    (handshake,) = fake.handshakes
    assert handshake.protocols == (wire.SUBPROTOCOL, KEY)
    assert handshake.path_qs == "/"
    assert KEY not in handshake.path_qs
    await agent.connect()  # at once when connected
    assert_key_never_logged(caplog)


async def test_concurrent_connects_share_one_outcome(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    calls = [asyncio.create_task(agent.connect()) for _ in range(3)]
    link = await fake.next_link()
    await link.hello()
    await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert len(fake.handshakes) == 1
    await link.assert_silent(0.05)


async def test_refused_handshakes_and_early_closes_are_retried_with_warnings(
    make_agent: MakeAgent, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.refuse = [401, 429, 503]
    agent = make_agent()
    connecting = asyncio.create_task(agent.connect())
    early = await fake.next_link()
    await early.close()
    link = await fake.next_link()
    await link.hello()
    await asyncio.wait_for(connecting, 5)
    assert [h.status for h in fake.handshakes] == [401, 429, 503, 101, 101]
    refusals = warnings_about(caplog, "handshake refused")
    assert [re.search(r"status=(\d+)", m).group(1) for m in refusals] == ["401", "429", "503"]  # type: ignore[union-attr]
    assert warnings_about(caplog, "closed before Hello")
    assert_key_never_logged(caplog)


async def test_a_wrong_key_is_refused_and_retried(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent(key="some-other-key-that-is-long-enough")
    connecting = asyncio.create_task(agent.connect())
    await wait_for(lambda: len(fake.handshakes) >= 2)
    assert {h.status for h in fake.handshakes} == {401}
    assert agent.status == "connecting"
    await agent.disconnect()
    with pytest.raises(ConnectionClosedError):
        await connecting


async def test_drop_and_reconnect_keep_the_process_uid_and_restart_seq(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    link = await join(agent, fake, "i_1")
    uid = agent.process_uid
    first = await link.poll()
    assert first.full and first.seq == 1
    assert (await link.poll(known_hash=first.hash)).seq == 2
    await link.close(code=4008)
    await wait_for(lambda: agent.status == "connecting")
    assert agent.instance_id is None
    again = await fake.next_link()
    await again.hello("i_2")
    await wait_for(lambda: agent.status == "connected")
    assert agent.instance_id == "i_2" and agent.process_uid == uid
    state = await again.poll()
    assert state.full and state.seq == 1 and state.process_uid == uid
    assert state.hash == first.hash


async def test_connect_waits_for_the_next_hello_while_reconnecting(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    link = await join(agent, fake)
    await link.close()
    await wait_for(lambda: agent.status == "connecting")
    waiting = asyncio.create_task(agent.connect())
    again = await fake.next_link()
    await asyncio.sleep(0.02)
    assert not waiting.done()
    await again.hello("i_2")
    await asyncio.wait_for(waiting, 5)


@pytest.mark.parametrize("protocol_version", [99, 2])
async def test_a_hello_with_another_protocol_version_is_fatal(
    make_agent: MakeAgent,
    fake: FakeOrchestrator,
    caplog: pytest.LogCaptureFixture,
    protocol_version: int,
) -> None:
    agent = make_agent()
    connecting = asyncio.create_task(agent.connect())
    link = await fake.next_link()
    await link.hello(protocol_version=protocol_version)
    with pytest.raises(ProtocolMismatchError, match="protocol version mismatch"):
        await asyncio.wait_for(connecting, 5)
    assert agent.status == "closed"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(str(protocol_version) in m and "3" in m for m in errors)
    await wait_for(link.closed.is_set)
    await asyncio.sleep(0.05)
    assert len(fake.handshakes) == 1


async def test_a_json_text_hello_is_a_version_mismatch(
    make_agent: MakeAgent, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    connecting = asyncio.create_task(agent.connect())
    link = await fake.next_link()
    await link.send_raw('{"type":"hello","instanceId":"i_1","protocolVersion":3}')
    with pytest.raises(ProtocolMismatchError) as info:
        await asyncio.wait_for(connecting, 5)
    assert info.value.remote == 123
    assert agent.status == "closed"
    assert any("123" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_an_undecodable_hello_is_ignored(
    make_agent: MakeAgent, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    connecting = asyncio.create_task(agent.connect())
    link = await fake.next_link()
    await link.send_raw(bytes([3, 0, 0xFF, 0xFF, 0xFF, 0xFF]))
    await link.send_raw(b"\x03")
    await link.hello()
    await asyncio.wait_for(connecting, 5)
    assert agent.status == "connected"
    assert warnings_about(caplog, "decode")


async def test_disconnect_is_idempotent_safe_before_connect_and_closes_with_1000(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()
    await agent.disconnect()
    assert agent.status == "closed"
    link = await join(agent, fake)
    await agent.disconnect()
    await agent.disconnect()
    assert agent.status == "closed" and agent.instance_id is None
    await wait_for(link.closed.is_set)
    assert link.ws.close_code == 1000
    again = await join(agent, fake, "i_2")
    assert agent.status == "connected" and agent.instance_id == "i_2"
    assert (await again.poll()).seq == 1


async def test_the_agent_is_an_async_context_manager(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    agent = make_agent()

    async def accept() -> None:
        link = await fake.next_link()
        await link.hello()

    accepting = asyncio.create_task(accept())
    async with agent as joined:
        assert joined is agent and agent.status == "connected"
    await accepting
    assert agent.status == "closed"
