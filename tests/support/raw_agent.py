"""A scriptable agent speaking raw protocol-3 frames, for orchestrator tests.

It answers polls and commands like a well-behaved agent unless told otherwise, and
lets a test send any bytes it likes to see how the orchestrator reacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire

from .keys import KEY
from .waits import wait_for


@dataclass
class RawRoom:
    type: str
    connections: int = 0
    origin: str = "local"
    metadata: str = ""  # sent as given (canonical JSON object text)
    max_connections: int | None = None
    locked: bool = False


@dataclass
class RawAgent:
    url: str
    key: str = KEY
    name: str = "raw"
    process_uid: str = field(default_factory=lambda: "p_" + secrets.token_hex(12))
    endpoint_url: str = "ws://127.0.0.1:9000"
    labels: dict[str, str] = field(default_factory=dict)
    room_types: list[str] = field(default_factory=lambda: ["match"])
    rooms: dict[str, RawRoom] = field(default_factory=dict)
    max_rooms: int | None = None
    max_connections: int | None = None
    auto_create: bool = True
    status: str = "active"
    auto_reply: bool = True
    auto_ack: bool = True
    reply_delay: float = 0.0
    ack_delay: float = 0.0

    def __post_init__(self) -> None:
        self.accepted: set[str] = set()  # seat reservations reported accepted
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.hello: agent_pb2.Hello | None = None
        self.polls: list[agent_pb2.Poll] = []
        self.commands: list[agent_pb2.Command] = []
        self.states_sent: list[agent_pb2.State] = []
        self.poll_times: list[float] = []  # loop time each Poll arrived
        self.reply_times: list[float] = []  # loop time each State was sent
        self.seq = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._hello = asyncio.Event()
        self.override_state: Callable[[agent_pb2.State], None] | None = None
        self.on_command: Callable[[agent_pb2.Command], Awaitable[agent_pb2.Ack | None]] | None = (
            None
        )

    # --- lifecycle ----------------------------------------------------------------

    async def connect(self, protocols: tuple[str, ...] | None = None) -> agent_pb2.Hello:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(
            self.url,
            protocols=protocols if protocols is not None else (wire.SUBPROTOCOL, self.key),
            max_msg_size=64 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._hello.wait(), 5)
        assert self.hello is not None
        return self.hello

    @property
    def instance_id(self) -> str:
        assert self.hello is not None
        return self.hello.instance_id

    async def close(self, code: int = 1000) -> None:
        """Close the socket; 1000 (the default) is a clean leave, like ``disconnect()``."""
        if self.ws is not None and not self.ws.closed:
            await self.ws.close(code=code)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.session is not None:
            await self.session.close()

    async def __aenter__(self) -> RawAgent:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- frames -------------------------------------------------------------------

    def snapshot_hash(self) -> str:
        extras = [
            (k, r.metadata, r.max_connections, r.locked)
            for k, r in sorted(self.rooms.items())
            if r.metadata or r.max_connections is not None or r.locked
        ]
        if extras or self.accepted:  # this test agent's own digest of the new fields
            return wire.hash64([self._base_hash(), extras, sorted(self.accepted)])
        return self._base_hash()

    def _base_hash(self) -> str:
        return wire.snapshot_hash(
            name=self.name,
            process_uid=self.process_uid,
            agent_version="1.0.0",
            protocol_version=3,
            endpoint_url=self.endpoint_url,
            labels=self.labels,
            max_connections=self.max_connections,
            max_rooms=self.max_rooms,
            auto_create=self.auto_create,
            room_types=self.room_types,
            rooms=[(k, r.type, r.connections, r.origin) for k, r in self.rooms.items()],
            status=self.status,
        )

    def state(self, req_id: str, full: bool) -> agent_pb2.State:
        self.seq += 1
        digest = self.snapshot_hash()
        if not full:
            return agent_pb2.State(req_id=req_id, full=False, seq=self.seq, hash=digest)
        state = agent_pb2.State(
            req_id=req_id,
            full=True,
            seq=self.seq,
            hash=digest,
            name=self.name,
            process_uid=self.process_uid,
            agent_version="1.0.0",
            protocol_version=3,
            endpoint_url=self.endpoint_url,
            auto_create=self.auto_create,
            room_types=sorted(self.room_types),
            status=self.status,
        )
        state.labels.update(self.labels)
        if self.max_connections is not None:
            state.capacity.max_connections = self.max_connections
        if self.max_rooms is not None:
            state.capacity.max_rooms = self.max_rooms
        for room_id, room in sorted(self.rooms.items()):
            entry = state.rooms.add(
                id=room_id,
                type=room.type,
                connections=room.connections,
                origin=room.origin,
                metadata=room.metadata,
                locked=room.locked,
            )
            if room.max_connections is not None:
                entry.max_connections = room.max_connections
        state.accepted_reservations.extend(sorted(self.accepted))
        if self.override_state is not None:
            self.override_state(state)
        return state

    async def send_frame(self, frame: agent_pb2.Frame) -> None:
        await self.send_bytes(wire.encode_frame(frame))

    async def send_bytes(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def send_text(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def next_poll(self, index: int, timeout: float = 5.0) -> agent_pb2.Poll:
        """The ``index``-th Poll of this connection (0-based), waiting for it to arrive."""
        await wait_for(lambda: len(self.polls) > index, timeout)
        return self.polls[index]

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait until the orchestrator closed the socket; the close code."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def reply(self, poll: agent_pb2.Poll, full: bool | None = None) -> agent_pb2.State:
        if full is None:
            full = not poll.HasField("known_hash") or poll.known_hash != self.snapshot_hash()
        state = self.state(poll.req_id, full)
        self.states_sent.append(state)
        self.reply_times.append(asyncio.get_running_loop().time())
        await self.send_frame(agent_pb2.Frame(state=state))
        return state

    def execute(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        ack = agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True)
        if cmd.op == "create":
            if cmd.room_id in self.rooms:
                ack.ok, ack.exists = False, True
            else:
                self.rooms[cmd.room_id] = RawRoom(cmd.room_type, 0, "fleet")
                ack.room.id, ack.room.type = cmd.room_id, cmd.room_type
        elif cmd.op == "destroy":
            if self.rooms.pop(cmd.room_id, None) is None:
                ack.already_gone = True
        elif cmd.op == "drain":
            self.status = "draining"
        elif cmd.op == "undrain":
            self.status = "active"
        return ack

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                message = await self.ws.receive()
                if message.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = message.extra
                if message.type is not aiohttp.WSMsgType.BINARY:
                    break
                frame = wire.decode_frame(message.data)
                body = frame.WhichOneof("body")
                if body == "hello":
                    self.hello = frame.hello
                    self.seq = 0
                    self._hello.set()
                elif body == "poll":
                    self.polls.append(frame.poll)
                    self.poll_times.append(asyncio.get_running_loop().time())
                    if self.auto_reply:
                        if self.reply_delay:
                            await asyncio.sleep(self.reply_delay)
                        await self.reply(frame.poll)
                elif body == "cmd":
                    self.commands.append(frame.cmd)
                    ack: agent_pb2.Ack | None = None
                    if self.on_command is not None:
                        ack = await self.on_command(frame.cmd)
                    elif self.auto_ack:
                        if self.ack_delay:
                            await asyncio.sleep(self.ack_delay)
                        ack = self.execute(frame.cmd)
                    if ack is not None:
                        await self.send_frame(agent_pb2.Frame(ack=ack))
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
