"""A fake orchestrator for agent tests: a real aiohttp WebSocket server on 127.0.0.1:0.

It checks the handshake like the real one (the ``rivalis-fleet.v1`` sentinel plus exactly
one known key, else 401 before any upgrade) and hands each accepted connection to the
test as a :class:`Link`, which sends Hello/Poll/Command frames and reads what the agent
answers. A fake can also play a standby: it refuses the upgrade with 503 ``NOT_LEADER``
and, when it knows one, the leader's agent URL in the body and in ``Fleet-Leader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import WSMsgType, web
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from tests.support.waits import settle

KEY = "agent-key-0123456789abcdefghijklmnop"


@dataclass(frozen=True, slots=True)
class Handshake:
    """What one handshake request carried, and the status it got."""

    path_qs: str
    protocols: tuple[str, ...]
    status: int
    at: float
    """Event-loop time of the request: orders the handshakes of several fakes."""


class Link:
    """One accepted agent connection, seen from the orchestrator's side."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[agent_pb2.Frame | bytes | str] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._req_ids = itertools.count(1)
        self._cmd_ids = itertools.count(1)

    async def send(self, frame: agent_pb2.Frame) -> None:
        await self.ws.send_bytes(wire.encode_frame(frame))

    async def send_raw(self, data: bytes | str) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def hello(
        self,
        instance_id: str = "i_1",
        *,
        protocol_version: int = 3,
        heartbeat_ms: int = 5000,
        features: tuple[str, ...] = (),
    ) -> None:
        hello = agent_pb2.Hello(
            instance_id=instance_id,
            protocol_version=protocol_version,
            heartbeat_ms=heartbeat_ms,
            features=features,
        )
        await self.send(agent_pb2.Frame(hello=hello))

    async def recv(self, within: float = 5.0) -> agent_pb2.Frame:
        item = await asyncio.wait_for(self.inbox.get(), within)
        assert isinstance(item, agent_pb2.Frame), f"agent sent a non-frame: {item!r}"
        return item

    async def send_poll(
        self, *, known_hash: str | None = None, status: str = "active", req_id: str | None = None
    ) -> str:
        req_id = req_id or f"poll_{next(self._req_ids)}"
        poll = agent_pb2.Poll(req_id=req_id, known_hash=known_hash, status=status)
        await self.send(agent_pb2.Frame(poll=poll))
        return req_id

    async def poll(
        self, *, known_hash: str | None = None, status: str = "active"
    ) -> agent_pb2.State:
        """Send a Poll and return the State answering it."""
        req_id = await self.send_poll(known_hash=known_hash, status=status)
        frame = await self.recv()
        assert frame.WhichOneof("body") == "state"
        assert frame.state.req_id == req_id
        return frame.state

    async def send_command(
        self, op: str, *, room_id: str = "", room_type: str = "", options: str = ""
    ) -> str:
        cmd_id = f"cmd_{next(self._cmd_ids)}"
        cmd = agent_pb2.Command(
            cmd_id=cmd_id, op=op, room_id=room_id, room_type=room_type, options=options
        )
        await self.send(agent_pb2.Frame(cmd=cmd))
        return cmd_id

    async def command(
        self, op: str, *, room_id: str = "", room_type: str = "", options: str = ""
    ) -> agent_pb2.Ack:
        """Send a Command (``options``: the canonical text of a JSON object) and return
        the Ack answering it."""
        cmd_id = await self.send_command(op, room_id=room_id, room_type=room_type, options=options)
        frame = await self.recv()
        assert frame.WhichOneof("body") == "ack"
        assert frame.ack.cmd_id == cmd_id
        return frame.ack

    async def assert_silent(self, duration: float = 0.15) -> None:
        """Nothing arrives from the agent for ``duration`` seconds."""
        await asyncio.sleep(duration)
        assert self.inbox.empty(), f"agent sent {self.inbox.get_nowait()!r}"

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode())


class FakeOrchestrator:
    """The server half: records handshakes, queues accepted links."""

    def __init__(self, keys: tuple[str, ...] = (KEY,)) -> None:
        self.keys = set(keys)
        self.handshakes: list[Handshake] = []
        self.links: list[Link] = []
        self.refuse: list[int] = []
        """Statuses answered (one per handshake, in order) before any handshake is accepted."""
        self.standby = False
        """Refuse every handshake with 503 ``NOT_LEADER`` (after the ``refuse`` list)."""
        self.leader: str | None = None
        """The leader hint of a 503 refusal: in the body, and in ``Fleet-Leader`` if set."""
        self.port = 0
        self._accepted: asyncio.Queue[Link] = asyncio.Queue()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def next_link(self, within: float = 5.0) -> Link:
        return await asyncio.wait_for(self._accepted.get(), within)

    def _accepts(self, offered: tuple[str, ...]) -> bool:
        others = [p for p in offered if p != wire.SUBPROTOCOL]
        return len(offered) == 2 and len(others) == 1 and others[0] in self.keys

    async def handle(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Sec-WebSocket-Protocol", "")
        offered = tuple(p.strip() for p in header.split(",") if p.strip())
        status = 101
        if self.refuse:
            status = self.refuse.pop(0)
        elif self.standby:
            status = 503
        elif not self._accepts(offered):
            status = 401
        at = asyncio.get_running_loop().time()
        self.handshakes.append(Handshake(str(request.rel_url), offered, status, at))
        if status == 503:
            body = {"status": "rejected", "cause": "NOT_LEADER", "leader": self.leader}
            headers = {} if self.leader is None else {"Fleet-Leader": self.leader}
            return web.json_response(body, status=status, headers=headers)
        if status != 101:
            body = {"status": "rejected", "cause": "UNAUTHORIZED"}
            return web.json_response(body, status=status)
        ws = web.WebSocketResponse(
            protocols=(wire.SUBPROTOCOL,), max_msg_size=2 * wire.MAX_FRAME_BYTES
        )
        await ws.prepare(request)
        link = Link(ws)
        self.links.append(link)
        self._accepted.put_nowait(link)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    try:
                        link.inbox.put_nowait(wire.decode_frame(msg.data))
                    except wire.WireError:
                        link.inbox.put_nowait(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    link.inbox.put_nowait(msg.data)
        finally:
            link.closed.set()
        return ws


@contextlib.asynccontextmanager
async def running_fake_orchestrator(
    keys: tuple[str, ...] = (KEY,),
) -> AsyncIterator[FakeOrchestrator]:
    fake = FakeOrchestrator(keys)
    app = web.Application()
    app.router.add_get("/", fake.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.port = runner.addresses[0][1]
    try:
        yield fake
    finally:
        for link in fake.links:
            await link.close(code=1001)
        await runner.cleanup()
        await settle()
