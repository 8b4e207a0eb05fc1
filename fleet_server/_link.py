"""One agent's WebSocket: Hello, polls on the heartbeat, liveness and kicks (SPEC §3).

Every frame from an agent must answer the outstanding poll or a pending command;
anything else gets it kicked with a close code from :class:`CloseCode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from enum import IntEnum
from typing import Final, cast

from aiohttp import WSMsgType, web
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire

from ._agent_tokens import AgentGrant
from ._commands import PendingCommand
from ._fleet import Fleet
from ._instance import Instance
from ._metrics import NULL_METER, Meter
from ._phases import SETTLE_TICKS, PollPhases
from ._replies import FEATURES, PartError, Reply, ReplyParts, is_extended, one_frame_delta
from ._state_layout import state_layout
from ._turns import TurnBudget

__all__ = ["AgentLink", "CloseCode", "next_tick", "poll_message"]

log = logging.getLogger("fleet.server")

FORCED_FULL_EVERY: Final = 12
STALE_AFTER: Final = 2
EVICT_AFTER: Final = 3
CLEAN_LEAVE: Final = 1000  # the agent's own close (``disconnect()``): its rooms left with it


class CloseCode(IntEnum):
    PROTOCOL_VIOLATION = 4000
    MALFORMED = 4002
    WRONG_MAJOR = 4003
    TOO_LARGE = 4004
    EVICTED = 4008
    NOT_LEADER = 4010
    REVOKED = 4011
    SHUTDOWN = 1001


_DIRECT_WRITE_LIMIT: Final = 64 * 1024
"""Frames go straight to the transport while less than this waits in its buffer; past it
(an agent that reads slowly) they go through aiohttp's writer, which waits for drain."""
_ACK_TAG: Final = b"\x2a"  # after the version bytes: Frame field 5 (ack), length-delimited


def server_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, uncompressed binary WebSocket frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x82, size)) + payload
    if size < 65536:
        return b"\x82\x7e" + size.to_bytes(2, "big") + payload
    return b"\x82\x7f" + size.to_bytes(8, "big") + payload


class AgentLink:
    """Owns one accepted agent socket, its reader and its poll timer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        instance_id: str,
        fleet: Fleet,
        heartbeat_ms: int,
        poll_ids: PollIds,
        ticket_key: bytes = b"",
        meter: Meter = NULL_METER,
        grant: AgentGrant | None = None,
        on_first_state: Callable[[], None] | None = None,
        phases: PollPhases | None = None,
        transport: asyncio.BaseTransport | None = None,
        turns: TurnBudget | None = None,
    ) -> None:
        self.ws = ws
        # The upgraded connection's transport: frames this side sends are written to it
        # directly (aiohttp's writer is three coroutine frames and checks per frame).
        # uvloop's transports are not asyncio.Transport subclasses: checked by method.
        self._transport = (
            cast(asyncio.WriteTransport, transport)
            if hasattr(transport, "get_write_buffer_size")
            else None
        )
        self._first_state = on_first_state  # called once: first State handled, or the end
        self._meter = meter
        self._polled_at = 0.0  # time.monotonic() when the outstanding poll was sent
        self.pending: dict[str, PendingCommand] = {}
        self.ticket_key = ticket_key
        self.grant = grant
        self._fleet = fleet
        self._heartbeat_ms = heartbeat_ms
        self._poll_ids = poll_ids
        self._phases = phases  # spreads the ticks of every link over the heartbeat
        self._slot: int | None = None  # this link's slot in ``phases``
        self._placed = 0  # ticks placed in ``phases``
        self._turns = turns if turns is not None else TurnBudget()
        self._outstanding: str | None = None
        self._parts: ReplyParts | None = None  # a reply in parts, until its last part
        self._missed = 0
        self._polls = 0
        self._forced = False  # the outstanding poll is a forced full one (no known_hash)
        self._closing = False
        self.instance: Instance = fleet.attach(instance_id, self)

    async def send(self, frame: agent_pb2.Frame) -> None:
        await self.send_encoded(wire.encode_frame(frame))

    async def send_encoded(self, data: bytes) -> None:
        """Send one already encoded message (header included)."""
        if self._closing or self.ws.closed:
            raise ConnectionResetError("agent link is closed")
        transport = self._transport
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() >= _DIRECT_WRITE_LIMIT
            or self.ws.compress
        ):
            await self.ws.send_bytes(data)
            return
        transport.write(server_frame(data))

    async def run(self) -> None:
        """Serve the connection until it closes; teardown always runs."""
        reason = "socket close"
        timer: asyncio.Task[None] | None = None
        try:
            await self.send(
                agent_pb2.Frame(
                    hello=agent_pb2.Hello(
                        instance_id=self.instance.id,
                        protocol_version=wire.PROTOCOL_MAJOR,
                        heartbeat_ms=self._heartbeat_ms,
                        features=FEATURES,
                    )
                )
            )
            await self._poll()
            first_tick = asyncio.get_running_loop().time() + self._heartbeat_ms / 1000.0
            timer = asyncio.create_task(self._ticks(first_tick), name=f"poll-{self.instance.id}")
            await self._read_loop()
            if not self._closing and self.ws.close_code == CLEAN_LEAVE:
                reason = "clean leave"
                self.teardown(reason, clean=True)
        except ConnectionError:
            pass  # the agent vanished mid-send: teardown below
        finally:
            self._handled_first_state()
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
            self.teardown(reason)
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close()

    def teardown(self, reason: str, *, clean: bool = False) -> None:
        """Forget the instance at once (idempotent); the socket is closed separately."""
        self._closing = True
        if not self.instance.removed:
            self._fleet.detach(self.instance, reason, clean=clean)

    async def close(self, code: int, reason: str) -> None:
        self.teardown(reason)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:120])

    async def kick(self, code: CloseCode, cause: str) -> None:
        log.warning("kick instance=%s cause=%s", self.instance.id, cause)
        self._meter.kick(code.name.lower())
        await self.close(code, "protocol violation")

    def _handled_first_state(self) -> None:
        done, self._first_state = self._first_state, None
        if done is not None:
            done()

    # --- polling ------------------------------------------------------------------

    async def _poll(self) -> None:
        self._polls += 1
        req_id = self._poll_ids.next()
        self._outstanding = req_id
        snapshot = self.instance.snapshot
        forced = self._polls % FORCED_FULL_EVERY == 1
        known_hash = snapshot.hash if snapshot is not None and not forced else None
        self._forced = known_hash is None
        self._polled_at = time.monotonic()
        await self.send_encoded(poll_message(req_id, known_hash, self.instance.status))

    def _place(self, due: float) -> float:
        """When the tick due at ``due`` runs: then, or a little later in a less crowded
        slot of the heartbeat (:class:`PollPhases`)."""
        if self._phases is None:
            return due
        self._placed += 1
        self._slot, due = self._phases.place(self._slot, due, self._placed <= SETTLE_TICKS)
        return due

    async def _ticks(self, due: float) -> None:
        try:
            await self._tick_loop(self._place(due))
        finally:
            if self._phases is not None and self._slot is not None:
                self._phases.release(self._slot)
                self._slot = None

    async def _tick_loop(self, deadline: float) -> None:
        """A tick every heartbeat on this link's own phase: a tick that fires late does
        not move the ones after it, so links whose timers one long loop iteration delayed
        together do not stay bunched up (:func:`next_tick`); ticks move only to spread
        out (:meth:`_place`)."""
        loop = asyncio.get_running_loop()
        interval = self._heartbeat_ms / 1000.0
        turns = self._turns
        while not self._closing:
            await asyncio.sleep(deadline - loop.time())
            if turns.spent():
                await turns.wait()
            if self._closing:
                return
            deadline = self._place(next_tick(deadline, interval, loop.time()))
            if self._outstanding is None:
                try:
                    await self._poll()
                except Exception as exc:
                    log.warning("poll send failed instance=%s error=%s", self.instance.id, exc)
                continue
            self._missed += 1
            if self._missed == STALE_AFTER:
                log.warning("instance stale instance=%s missed=%d", self.instance.id, self._missed)
                self._fleet.mark_stale(self.instance)
            elif self._missed >= EVICT_AFTER:
                log.warning(
                    "instance evicted instance=%s missed=%d", self.instance.id, self._missed
                )
                self._meter.eviction()
                await self.close(CloseCode.EVICTED, "liveness eviction")
                return

    # --- reading ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        turns = self._turns
        async for message in self.ws:
            if self._closing:
                return
            if message.type is WSMsgType.BINARY:
                data = message.data
                # joined, over budget, and not an Ack (a caller waits on it): wait in line
                if self._first_state is None and data[2:3] != _ACK_TAG and turns.spent():
                    await turns.wait()
                    if self._closing:
                        return
                await self._on_binary(data)
            elif message.type is WSMsgType.TEXT:
                await self.kick(CloseCode.MALFORMED, "text frame")
            elif message.type is WSMsgType.ERROR:
                return

    async def _on_binary(self, data: bytes) -> None:
        try:
            frame = wire.decode_frame(data)
        except wire.FrameTooLargeError:
            await self.kick(CloseCode.TOO_LARGE, "frame too large")
            return
        except wire.ProtocolVersionError as exc:
            log.warning(
                "protocol version mismatch instance=%s major=%d expected=%d",
                self.instance.id,
                exc.major,
                wire.PROTOCOL_MAJOR,
            )
            await self.kick(CloseCode.WRONG_MAJOR, "wrong protocol major")
            return
        except wire.TruncatedFrameError:
            await self.kick(CloseCode.MALFORMED, "truncated frame")
            return
        except wire.WireError:
            await self.kick(CloseCode.MALFORMED, "undecodable frame")
            return
        body = frame.WhichOneof("body")
        if body == "state":
            state = frame.state
            if self._outstanding is None or state.req_id != self._outstanding:
                await self.kick(CloseCode.PROTOCOL_VIOLATION, "state answers no outstanding poll")
                return
            reply: agent_pb2.State | Reply | None = None if self._parts is not None else state
            layout = None
            if reply is not None and state.full:  # one frame: its head likely as before
                applied = self.instance.snapshot
                head = applied.head if applied is not None else None
                layout = state_layout(data, rooms=self._forced, head=head)
                if layout is None or layout.extended:
                    reply = self._one_frame_delta(state)
            if reply is None:
                try:
                    reply = await self._collect(state)
                except PartError as exc:
                    await self.kick(CloseCode.PROTOCOL_VIOLATION, str(exc))
                    return
                if reply is None:
                    return
            self._outstanding = None
            self._missed = 0
            self._meter.poll_rtt(time.monotonic() - self._polled_at)
            self.instance.mark_fresh()
            try:
                self._fleet.on_state(self.instance, reply, layout)
            except Exception:
                log.exception("state handling failed instance=%s", self.instance.id)
            self._handled_first_state()
        elif body == "ack":
            if not self._fleet.on_ack(self, frame.ack):
                await self.kick(CloseCode.PROTOCOL_VIOLATION, "ack answers no pending command")
        else:
            await self.kick(
                CloseCode.PROTOCOL_VIOLATION, f"unexpected {body or 'empty'} frame from agent"
            )

    def _one_frame_delta(self, state: agent_pb2.State) -> agent_pb2.State | Reply | None:
        """A one-frame reply as :meth:`Fleet.on_state` takes it: itself, or a small delta
        parsed at once; None when it is a reply in parts or a big delta (:meth:`_collect`)."""
        if not is_extended(state):
            return state
        snapshot = self.instance.snapshot
        return one_frame_delta(state, snapshot.rooms if snapshot is not None else None)

    async def _collect(self, state: agent_pb2.State) -> Reply | None:
        """Take one frame of a reply in parts (or a delta); the reply once complete. The
        rooms are parsed a batch per loop turn, so a 4 MiB part never holds the loop."""
        parts = self._parts
        if parts is None:
            snapshot = self.instance.snapshot
            parts = ReplyParts(state, snapshot.rooms if snapshot is not None else None)
        else:
            parts.add(state)
        self._parts = parts
        self._missed = 0  # a part is a sign of life
        for _ in parts.batches(state):
            await asyncio.sleep(0)
            if self._closing:
                return None
        if not parts.complete:
            return None
        self._parts = None
        return parts.reply


def next_tick(deadline: float, interval: float, now: float) -> float:
    """The tick after the one due at ``deadline`` that fired at ``now``: one ``interval``
    on, on the same phase, and at least half an ``interval`` after ``now`` (ticks a stalled
    loop missed are skipped, not run back to back, and a poll sent late still has half a
    heartbeat to be answered before the next tick counts it missed)."""
    due = deadline + interval
    if due - now < interval / 2:
        due += interval * math.ceil((now + interval / 2 - due) / interval)
    return due


def _string_field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + wire.varint(len(raw)) + raw


def poll_message(req_id: str, known_hash: str | None, status: str) -> bytes:
    """``wire.encode_frame(Frame(poll=Poll(...)))``, written directly: a poll goes to
    every agent every heartbeat, and two message objects per poll cost more than this."""
    body = _string_field(b"\x0a", req_id) if req_id else b""
    if known_hash is not None:
        body += _string_field(b"\x12", known_hash)
    if status:
        body += _string_field(b"\x1a", status)
    return wire.HEADER + b"\x12" + wire.varint(len(body)) + body


class PollIds:
    """``poll_<n>``: one counter per orchestrator, shared by every connection."""

    def __init__(self) -> None:
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"poll_{self._n}"
