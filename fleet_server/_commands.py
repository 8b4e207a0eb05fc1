"""Acknowledged commands to agents (SPEC §8): ids, the in-flight table, timeouts.

A command settles exactly once: by its ack, its timeout, its link's teardown or a
failed send. The engine keeps the table; the :class:`~fleet_server._fleet.Fleet`
decides what each outcome does to reservations and the read model.

Every command has the same timeout, so commands expire in the order they started: the
engine keeps them in start order and one timer, armed for the oldest one's deadline,
expires whatever is due when it fires (a settled command just leaves the table, with no
timer of its own to cancel). The Command frame is written as bytes, like polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire

from ._agent_tokens import AgentGrant
from ._errors import ErrorCode, FleetError
from ._instance import Instance

__all__ = [
    "MAX_IN_FLIGHT",
    "CommandOp",
    "CommandSink",
    "Commands",
    "PendingCommand",
    "command_message",
]

MAX_IN_FLIGHT: Final = 32

CommandOp = Literal["create", "destroy", "drain", "undrain"]


class CommandSink(Protocol):
    """What the engine needs from an agent link."""

    pending: dict[str, PendingCommand]
    ticket_key: bytes  # seat tickets for this agent's rooms are signed with it
    grant: AgentGrant | None  # the agent token it joined with: what its snapshots must say

    def send_encoded(self, data: bytes) -> Awaitable[None]:
        """Send one encoded frame (header included)."""
        ...


@dataclass(eq=False, slots=True)
class PendingCommand:
    cmd_id: str
    op: CommandOp
    instance: Instance
    sink: CommandSink
    room_id: str
    room_type: str
    future: asyncio.Future[agent_pb2.Ack]
    options: str = ""  # a create's options: canonical JSON object text
    sent: bool = False  # handed to the socket: the agent may have run it
    started: float = 0.0  # time.monotonic() when registered
    deadline: float = field(default=0.0)  # loop time when it times out


Outcome = Callable[[PendingCommand, agent_pb2.Ack | FleetError], None]


class Commands:
    """Issues commands and settles them; ``on_settle`` applies each outcome's effects."""

    def __init__(self, timeout_ms: int, on_settle: Outcome) -> None:
        self._timeout = timeout_ms / 1000.0
        self._timeout_ms = timeout_ms
        self._counter = 0
        self._on_settle = on_settle
        self._by_age: dict[str, PendingCommand] = {}  # in flight, in start order
        self._timer: asyncio.TimerHandle | None = None  # at the oldest one's deadline

    def start(
        self,
        instance: Instance,
        sink: CommandSink,
        op: CommandOp,
        room_id: str = "",
        room_type: str = "",
        options: str = "",
    ) -> PendingCommand:
        """Register a command; raises ``INSTANCE_BUSY`` at the in-flight cap (nothing sent)."""
        if len(sink.pending) >= MAX_IN_FLIGHT:
            raise FleetError(
                ErrorCode.INSTANCE_BUSY,
                f"instance {instance.id} has {MAX_IN_FLIGHT} commands in flight",
            )
        self._counter += 1
        loop = asyncio.get_running_loop()
        cmd_id = f"cmd_{self._counter}"
        pending = PendingCommand(
            cmd_id,
            op,
            instance,
            sink,
            room_id,
            room_type,
            loop.create_future(),
            options,
            False,
            time.monotonic(),
            loop.time() + self._timeout,
        )
        sink.pending[cmd_id] = pending
        self._by_age[cmd_id] = pending
        if self._timer is None:
            self._timer = loop.call_at(pending.deadline, self._expire_due)
        return pending

    async def run(self, pending: PendingCommand) -> agent_pb2.Ack:
        """Send a registered command and wait for it to settle."""
        data = command_message(
            pending.cmd_id, pending.op, pending.room_id, pending.room_type, pending.options
        )
        pending.sent = True
        try:
            await pending.sink.send_encoded(data)
        except Exception as exc:
            self.settle(
                pending,
                FleetError(
                    ErrorCode.INSTANCE_DISCONNECTED,
                    f"instance {pending.instance.id} is disconnected: send failed",
                ),
            )
            if not pending.future.done():  # pragma: no cover - settle always resolves
                raise FleetError(ErrorCode.INSTANCE_DISCONNECTED) from exc
        return await pending.future

    def acknowledge(self, sink: CommandSink, ack: agent_pb2.Ack) -> bool:
        """Settle the command ``ack`` answers; False if it answers nothing (a kick)."""
        pending = sink.pending.get(ack.cmd_id)
        if pending is None:
            return False
        if ack.ok:
            self.settle(pending, ack)
        elif ack.exists:
            self.settle(
                pending,
                FleetError(ErrorCode.ROOM_EXISTS, f"room {pending.room_id} exists on the instance"),
            )
        else:
            reason = ack.error if ack.HasField("error") else "no reason given"
            self.settle(
                pending,
                FleetError(ErrorCode.COMMAND_FAILED, f"{pending.op} failed on the agent: {reason}"),
            )
        return True

    def fail_all(self, sink: CommandSink, reason: str) -> None:
        """Fail every command in flight on ``sink`` at once (its link is gone)."""
        for pending in list(sink.pending.values()):
            self.settle(
                pending,
                FleetError(
                    ErrorCode.INSTANCE_DISCONNECTED,
                    f"instance {pending.instance.id} disconnected: {reason}",
                ),
            )

    def settle(self, pending: PendingCommand, outcome: agent_pb2.Ack | FleetError) -> None:
        if pending.sink.pending.pop(pending.cmd_id, None) is None:
            return
        del self._by_age[pending.cmd_id]
        self._on_settle(pending, outcome)
        if pending.future.done():
            return
        if isinstance(outcome, FleetError):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    def _expire_due(self) -> None:
        """Time out every command whose deadline has passed, oldest first; re-arm the
        timer for the oldest one left."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        by_age = self._by_age
        while by_age:
            pending = next(iter(by_age.values()))
            if pending.deadline > now:
                self._timer = loop.call_at(pending.deadline, self._expire_due)
                return
            self.settle(
                pending,
                FleetError(
                    ErrorCode.COMMAND_TIMEOUT,
                    f"command {pending.cmd_id} ({pending.op}) got no ack within "
                    f"{self._timeout_ms} ms",
                ),
            )


def command_message(cmd_id: str, op: str, room_id: str, room_type: str, options: str) -> bytes:
    """``wire.encode_frame(Frame(cmd=Command(...)))``, written directly (empty strings
    are left out, as protobuf leaves them out)."""
    body = bytearray()
    for tag, text in ((0x0A, cmd_id), (0x12, op), (0x1A, room_id), (0x22, room_type)):
        if text:  # a length under 128 is one byte
            raw = text.encode()
            size = len(raw)
            body.append(tag)
            body += bytes((size,)) if size < 0x80 else wire.varint(size)
            body += raw
    if options:
        raw = options.encode()
        body += b"\x2a" + wire.varint(len(raw)) + raw
    size = len(body)
    length = bytes((size,)) if size < 0x80 else wire.varint(size)
    return wire.HEADER + b"\x22" + length + body
