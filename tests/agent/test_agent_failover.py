"""FleetAgent with several orchestrator URLs: dial order, leader hints, failover after a
drop, a 4010 close or a silent orchestrator (CONTRACT §10, agent) — over real sockets.

Real orchestrators play the dead and the live nodes; fake ones play standbys (503
``NOT_LEADER``), a leader that steps down (close 4010) and a frozen leader (a Hello, then
no polls). A long backoff shows that nothing waits between the URLs of one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import Backoff, FleetAgent, Room, wire
from tests.support.agents import FleetAgents, define_rooms
from tests.support.keys import KEY
from tests.support.orchestrators import agent_url, listed, running_orchestrator
from tests.support.ports import free_port
from tests.support.waits import settle, wait_for

from .fake_orchestrator import FakeOrchestrator, Link, running_fake_orchestrator
from .support import FAST, CountingRooms

SLOW = Backoff(initial_ms=60_000, max_ms=60_000)
"""A backoff no test waits out: an agent that joins within seconds did not back off
(the "retrying in" log line is checked as well: it is only written at a pass end)."""

MakeFakes = Callable[[int], Awaitable[list[FakeOrchestrator]]]
MakeAgent = Callable[..., FleetAgent]


@pytest.fixture
async def fakes() -> AsyncIterator[MakeFakes]:
    """Factory: ``await fakes(n)`` starts ``n`` fake orchestrators, stopped at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(count: int) -> list[FakeOrchestrator]:
            return [
                await stack.enter_async_context(running_fake_orchestrator(keys=(KEY,)))
                for _ in range(count)
            ]

        yield make


@pytest.fixture
async def make_agent(fakes: MakeFakes) -> AsyncIterator[MakeAgent]:
    """Factory for agents (``url=`` required, ``host`` optional); every one is disconnected
    at teardown, before the fake orchestrators stop (an agent reconnecting into a fake
    that is shutting down leaves aiohttp a connection it never closes)."""
    async with FleetAgents(key=KEY, endpoint_url="ws://127.0.0.1:9000", backoff=FAST) as factory:

        def make(host: Any = None, **options: Any) -> FleetAgent:
            room_host = define_rooms(CountingRooms(), "match") if host is None else host
            return factory(room_host, **options)

        yield make


class ClosingNode:
    """A small orchestrator stand-in: each connection gets a Hello and, once :attr:`go`
    is set, a close with ``code``; :attr:`answers` records the code the agent answered
    with (read by aiohttp's close, which nothing else reads concurrently here)."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        self.go = asyncio.Event()
        self.joins = 0
        self.answers: list[int | None] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(wire.SUBPROTOCOL,))
        await ws.prepare(request)
        self.joins += 1
        hello = agent_pb2.Hello(
            instance_id=f"i_closing_{self.joins}", protocol_version=3, heartbeat_ms=5000
        )
        await ws.send_bytes(wire.encode_frame(agent_pb2.Frame(hello=hello)))
        await self.go.wait()
        await ws.close(code=self.code, message=self.reason.encode())
        self.answers.append(ws.close_code)
        return ws


@contextlib.asynccontextmanager
async def running_closing_node(code: int, reason: str = "") -> AsyncIterator[ClosingNode]:
    node = ClosingNode(code, reason)
    app = web.Application()
    app.router.add_get("/", node.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    node.url = f"ws://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield node
    finally:
        node.go.set()
        # a connection the agent dialled just before it stopped: let the server see it
        # end before shutting down (aiohttp leaves one accepted during its shutdown open)
        await asyncio.sleep(0.05)
        await runner.cleanup()
        await settle()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fleet.agent" and r.levelno >= logging.INFO and text in r.getMessage()
    ]


def dial_order(*nodes: FakeOrchestrator) -> list[str]:
    """Which fake each handshake reached, in time order, as ``"n0"``, ``"n1"``, …"""
    seen = [(h.at, f"n{i}") for i, node in enumerate(nodes) for h in node.handshakes]
    return [name for _, name in sorted(seen)]


async def hello_on(node: FakeOrchestrator, instance_id: str, **hello: Any) -> Link:
    link = await node.next_link(10)
    await link.hello(instance_id, **hello)
    return link


def assert_key_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert KEY not in record.getMessage()


# -- real orchestrators ---------------------------------------------------------------


async def test_a_dead_first_url_moves_the_agent_to_the_second_without_backoff(
    make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dead = f"ws://127.0.0.1:{free_port()}"
    async with running_orchestrator() as orch:
        live = agent_url(orch.port)
        agent = make_agent(url=[dead, live], backoff=SLOW)
        assert agent.url == dead
        await asyncio.wait_for(agent.connect(), 10)
        assert agent.url == live
        assert agent.instance_id is not None
        await listed(orch, agent.instance_id)
        assert messages(caplog, f"connect failed url={dead}")
        assert messages(caplog, f"trying url={live}")
        assert not messages(caplog, "retrying in")
        assert_key_never_logged(caplog)
        await agent.disconnect()


async def test_a_dropped_connection_rejoins_through_the_other_url(
    make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_orchestrator() as first, running_orchestrator() as second:
        urls = [agent_url(first.port), agent_url(second.port)]
        agent = make_agent(url=urls)
        await asyncio.wait_for(agent.connect(), 10)
        assert agent.url == urls[0]
        before = agent.instance_id
        assert before is not None
        await listed(first, before)
        await first.shutdown()  # its agent links close with 1001; the port stops listening
        await wait_for(lambda: agent.status == "connected" and agent.url == urls[1], 15)
        assert agent.instance_id is not None and agent.instance_id != before
        await listed(second, agent.instance_id)
        # the pass after the drop began at the URL that was in use
        assert messages(caplog, f"connect failed url={urls[0]}")
        await agent.disconnect()


# -- standbys: 503 NOT_LEADER -------------------------------------------------------------


async def test_a_leader_hint_sends_the_agent_straight_to_the_hinted_url(
    make_agent: MakeAgent, fakes: MakeFakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    standby, other, leader = await fakes(3)
    standby.standby = True
    standby.leader = leader.url  # not in the agent's list
    other.standby = True
    agent = make_agent(url=[standby.url, other.url], backoff=SLOW)
    connecting = asyncio.create_task(agent.connect())
    await hello_on(leader, "i_leader")
    await asyncio.wait_for(connecting, 10)
    assert agent.url == leader.url and agent.instance_id == "i_leader"
    assert [h.status for h in standby.handshakes] == [503]
    assert other.handshakes == []  # the hint came first
    assert messages(caplog, f"trying the leader url={leader.url}")
    assert not messages(caplog, "retrying in")


async def test_a_standby_without_a_hint_moves_the_agent_on_in_order_without_backoff(
    make_agent: MakeAgent, fakes: MakeFakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nodes = await fakes(3)
    first, second, live = nodes
    first.standby = second.standby = True
    agent = make_agent(url=[node.url for node in nodes], backoff=SLOW)
    connecting = asyncio.create_task(agent.connect())
    await hello_on(live, "i_1")
    await asyncio.wait_for(connecting, 10)
    assert dial_order(*nodes) == ["n0", "n1", "n2"]
    assert agent.url == live.url
    assert not messages(caplog, "retrying in")


async def test_hints_are_followed_once_per_pass_and_backoff_comes_after_the_pass(
    make_agent: MakeAgent, fakes: MakeFakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nodes = await fakes(3)
    a, b, c = nodes
    for node in nodes:
        node.standby = True
    a.leader = a.url  # names itself: ignored
    b.leader = c.url  # not listed: followed
    c.leader = a.url  # a second hint in the pass: ignored
    agent = make_agent(url=[a.url, b.url], backoff=Backoff(initial_ms=50, max_ms=100))
    connecting = asyncio.create_task(agent.connect())
    await wait_for(lambda: len(dial_order(*nodes)) >= 9, 15)
    assert dial_order(*nodes)[:9] == ["n0", "n1", "n2"] * 3
    passes = len(messages(caplog, "retrying in"))
    assert 2 <= passes <= len(dial_order(*nodes)) // 3
    assert agent.status == "connecting" and not connecting.done()
    await agent.disconnect()
    with contextlib.suppress(Exception):
        await connecting


async def test_after_a_drop_the_next_pass_starts_at_the_url_that_was_in_use(
    make_agent: MakeAgent, fakes: MakeFakes
) -> None:
    first, second = await fakes(2)
    first.standby = True
    agent = make_agent(url=[first.url, second.url])
    connecting = asyncio.create_task(agent.connect())
    link = await hello_on(second, "i_1")
    await asyncio.wait_for(connecting, 10)
    await link.close(code=4008)
    await hello_on(second, "i_2")
    await wait_for(lambda: agent.instance_id == "i_2", 10)
    assert agent.url == second.url
    assert dial_order(first, second) == ["n0", "n1", "n1"]


# -- closes from the orchestrator and silent orchestrators ---------------------------


async def test_a_4010_close_sends_the_agent_to_the_next_url_at_once(
    make_agent: MakeAgent, fakes: MakeFakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    (successor,) = await fakes(1)
    async with running_closing_node(4010, "not leader") as deposed:
        agent = make_agent(url=[deposed.url, successor.url], backoff=SLOW)
        await asyncio.wait_for(agent.connect(), 10)
        assert agent.url == deposed.url and agent.instance_id == "i_closing_1"
        deposed.go.set()
        await hello_on(successor, "i_2")
        await wait_for(lambda: agent.instance_id == "i_2", 10)
        assert agent.url == successor.url
        assert deposed.joins == 1
        assert deposed.answers == [4010]  # the agent answered with the same code, not 1000
        assert messages(caplog, f"trying url={successor.url} at once")
        assert not messages(caplog, "retrying in")


@pytest.mark.parametrize(("sent", "answered"), [(1000, 1001), (1001, 1001), (4008, 4008)])
async def test_the_agent_answers_a_close_with_its_code_but_never_with_1000(
    make_agent: MakeAgent, sent: int, answered: int
) -> None:
    async with running_closing_node(sent) as node:
        agent = make_agent(url=node.url)
        await asyncio.wait_for(agent.connect(), 10)
        node.go.set()
        await wait_for(lambda: len(node.answers) >= 2, 10)  # and it redials
        assert set(node.answers) == {answered}
        await agent.disconnect()


async def test_a_frozen_orchestrator_is_dropped_with_4012_after_three_heartbeats(
    make_agent: MakeAgent, fakes: MakeFakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    frozen, live = await fakes(2)
    agent = make_agent(url=[frozen.url, live.url], backoff=SLOW)
    connecting = asyncio.create_task(agent.connect())
    link = await hello_on(frozen, "i_frozen", heartbeat_ms=100)  # and then never a poll
    await asyncio.wait_for(connecting, 10)
    joined = asyncio.get_running_loop().time()
    await asyncio.wait_for(link.closed.wait(), 10)
    assert asyncio.get_running_loop().time() - joined >= 0.2  # not before three heartbeats
    assert link.ws.close_code == 4012
    await hello_on(live, "i_live")
    await wait_for(lambda: agent.instance_id == "i_live", 10)
    assert agent.url == live.url
    assert messages(caplog, "no poll for 3 heartbeats")
    assert not messages(caplog, "retrying in")


@contextlib.asynccontextmanager
async def mute_node() -> AsyncIterator[str]:
    """A frozen process's port: the kernel accepts connections, nothing ever answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()


async def test_after_a_hello_a_handshake_nobody_answers_is_given_up_after_three_heartbeats(
    make_agent: MakeAgent, fakes: MakeFakes, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen leader is dropped for its silence; the next pass must not wait the whole
    10 s handshake bound on another frozen node (or on the same one, hinted at by a
    standby whose view is a lease behind) before it reaches the new leader."""
    caplog.set_level(logging.INFO)
    frozen, live = await fakes(2)
    async with mute_node() as mute:
        agent = make_agent(url=[frozen.url, mute, live.url], backoff=SLOW)
        connecting = asyncio.create_task(agent.connect())
        link = await hello_on(frozen, "i_frozen", heartbeat_ms=100)  # then never a poll
        await asyncio.wait_for(connecting, 10)
        await asyncio.wait_for(link.closed.wait(), 10)
        dropped = asyncio.get_running_loop().time()
        await hello_on(live, "i_live")
        await wait_for(lambda: agent.instance_id == "i_live", 10)
        waited = live.handshakes[0].at - dropped
        assert 0.25 <= waited < 2, waited  # three heartbeats on the mute node, not 10 s
        assert messages(caplog, f"connect failed url={mute}")
        assert not messages(caplog, "retrying in")


class SlowRoom(Room):
    async def on_create(self) -> None:
        await asyncio.sleep(1.0)


async def test_polls_and_slow_host_calls_keep_the_connection(
    make_agent: MakeAgent, fakes: MakeFakes
) -> None:
    (node,) = await fakes(1)
    agent = make_agent(define_rooms(CountingRooms(), slow=SlowRoom), url=node.url)
    connecting = asyncio.create_task(agent.connect())
    link = await hello_on(node, "i_1", heartbeat_ms=200)
    await asyncio.wait_for(connecting, 10)
    for _ in range(5):  # a second of polls, one per heartbeat
        await asyncio.sleep(0.2)
        await link.poll()
    # a create that takes five heartbeats: the agent was busy, not waiting for polls
    ack = await link.command("create", room_id="r1", room_type="slow")
    assert ack.ok
    await asyncio.sleep(0.2)  # one more heartbeat of waiting, then the next poll
    await link.poll()
    assert not link.closed.is_set() and agent.instance_id == "i_1"
    assert len(node.handshakes) == 1
    await agent.disconnect()
    await wait_for(link.closed.is_set, 10)
    assert link.ws.close_code == 1000  # disconnect() is a clean leave
