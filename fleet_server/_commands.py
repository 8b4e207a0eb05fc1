"""Acknowledged commands to agents (SPEC §8): ids, the in-flight table, timeouts.

A command settles exactly once: by its ack, its timeout, its link's teardown or a
failed send. The engine keeps the table; the :class:`~fleet_server._fleet.Fleet`
decides what each outcome does to reservations and the read model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from rivalis.fleet.v3 import agent_pb2

from ._agent_tokens import AgentGrant
from ._errors import ErrorCode, FleetError
from ._instance import Instance

__all__ = ["MAX_IN_FLIGHT", "CommandOp", "CommandSink", "Commands", "PendingCommand"]

MAX_IN_FLIGHT: Final = 32

CommandOp = Literal["create", "destroy", "drain", "undrain"]


class CommandSink(Protocol):
    """What the engine needs from an agent link."""

    pending: dict[str, PendingCommand]
    ticket_key: bytes  # seat tickets for this agent's rooms are signed with it
    grant: AgentGrant | None  # the agent token it joined with: what its snapshots must say

    def send(self, frame: agent_pb2.Frame) -> Awaitable[None]: ...


@dataclass(eq=False, slots=True)
class PendingCommand:
    cmd_id: str
    op: CommandOp
    instance: Instance
    sink: CommandSink
    room_id: str
    room_type: str
    future: asyncio.Future[agent_pb2.Ack]
    timer: asyncio.TimerHandle | None = field(default=None)
    options: str = ""  # a create's options: canonical JSON object text
    sent: bool = False  # handed to the socket: the agent may have run it
    started: float = 0.0  # time.monotonic() when registered


Outcome = Callable[[PendingCommand, agent_pb2.Ack | FleetError], None]


class Commands:
    """Issues commands and settles them; ``on_settle`` applies each outcome's effects."""

    def __init__(self, timeout_ms: int, on_settle: Outcome) -> None:
        self._timeout = timeout_ms / 1000.0
        self._timeout_ms = timeout_ms
        self._counter = 0
        self._on_settle = on_settle

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
        pending = PendingCommand(
            cmd_id=f"cmd_{self._counter}",
            op=op,
            instance=instance,
            sink=sink,
            room_id=room_id,
            room_type=room_type,
            future=loop.create_future(),
            options=options,
            started=time.monotonic(),
        )
        sink.pending[pending.cmd_id] = pending
        pending.timer = loop.call_later(self._timeout, self._expire, pending)
        return pending

    async def run(self, pending: PendingCommand) -> agent_pb2.Ack:
        """Send a registered command and wait for it to settle."""
        frame = agent_pb2.Frame(
            cmd=agent_pb2.Command(
                cmd_id=pending.cmd_id,
                op=pending.op,
                room_id=pending.room_id,
                room_type=pending.room_type,
                options=pending.options,
            )
        )
        pending.sent = True
        try:
            await pending.sink.send(frame)
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
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        self._on_settle(pending, outcome)
        if pending.future.done():
            return
        if isinstance(outcome, FleetError):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    def _expire(self, pending: PendingCommand) -> None:
        pending.timer = None
        self.settle(
            pending,
            FleetError(
                ErrorCode.COMMAND_TIMEOUT,
                f"command {pending.cmd_id} ({pending.op}) got no ack within {self._timeout_ms} ms",
            ),
        )
