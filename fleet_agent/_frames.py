"""The frames an agent answers: a Poll with the snapshot, a Command with an Ack.

Each frame is handled to the end before the next is read, so an Ack goes out only after
the host call it reports on finished.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Coroutine
from typing import Final

from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._config import AgentConfig
from ._connection import Reply
from ._errors import RoomExistsError, describe
from ._host import RoomHost
from ._log import logger
from ._reply_parts import MAX_PARTS, PARTS
from ._rooms import RoomManager
from ._snapshot import Snapshot, SnapshotStatus

__all__ = ["FrameHandler"]

_SNAPSHOT_WARNING_BYTES: Final = wire.MAX_FRAME_BYTES // 2
_SNAPSHOT_ERROR_BYTES: Final = math.ceil(wire.MAX_FRAME_BYTES * 0.9)
_NO_OPTIONS: Final = (
    "this host's create_room takes no options (room_type, room_id only); the create carried options"
)


def _ack(cmd: agent_pb2.Command, *, ok: bool, error: str | None = None) -> agent_pb2.Ack:
    return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=ok, error=error)


class FrameHandler:
    """Answers the orchestrator's frames for one agent.

    ``apply_status`` sets the reported status (a drain or undrain command);
    ``on_echo`` gets the status each Poll echoes, which settles ``drain()`` waits.
    :attr:`polls` counts the Polls handled, for the liveness check of the connection.
    """

    def __init__(
        self,
        host: RoomHost,
        config: AgentConfig,
        snapshot: Snapshot,
        *,
        apply_status: Callable[[SnapshotStatus], None],
        on_echo: Callable[[str], None],
    ) -> None:
        self._host = host
        self._config = config
        self._snapshot = snapshot
        self._apply_status = apply_status
        self._on_echo = on_echo
        self._takes_options = _takes_options(host)
        self._manager = _manager(host)
        self.polls = 0

    def answer(self, data: bytes) -> Reply | Coroutine[None, None, Reply]:
        """The encoded reply to one received message, if it needs one; a coroutine
        making it when it takes a host call (a create or a destroy)."""
        quick = _quick_poll(data)
        if quick is not None:
            return self._on_poll(*quick)
        try:
            frame = wire.decode_frame(data)
        except wire.ProtocolVersionError as exc:
            logger.warning(
                "dropped a frame: protocol version mismatch (major %d, expected %d)",
                exc.major,
                wire.PROTOCOL_MAJOR,
            )
            return None
        except wire.WireError as exc:
            logger.warning("dropped a frame: cannot decode it (%s)", exc)
            return None
        body = frame.WhichOneof("body")
        if body == "poll":
            poll = frame.poll
            known_hash = poll.known_hash if poll.HasField("known_hash") else None
            return self._on_poll(poll.req_id, known_hash, poll.status)
        if body == "cmd":
            cmd = frame.cmd
            if cmd.op in ("create", "destroy"):
                return self._on_host_command(cmd)
            return wire.encode_frame(agent_pb2.Frame(ack=self._on_command(cmd)))
        logger.warning("dropped a %s frame: not one an agent accepts", body or "empty")
        return None

    async def _on_host_command(self, cmd: agent_pb2.Command) -> Reply:
        ack = await (self._create(cmd) if cmd.op == "create" else self._destroy(cmd))
        return wire.encode_frame(agent_pb2.Frame(ack=ack))

    def _on_poll(self, req_id: str, known_hash: str | None, status: str) -> Reply:
        self.polls += 1
        self._on_echo(status)
        snapshot = self._snapshot
        try:
            if snapshot.features:
                frames = snapshot.reply_frames(self._host, req_id, known_hash)
            else:
                data = snapshot.reply_frame(self._host, req_id, known_hash)
        except Exception:
            logger.exception("cannot build the snapshot; poll left unanswered")
            return None
        if snapshot.features:
            if len(frames) > MAX_PARTS or (
                PARTS not in snapshot.features and len(frames[0]) >= _SNAPSHOT_WARNING_BYTES
            ):
                _check_snapshot_size(sum(map(len, frames)))
            return frames
        if len(data) >= _SNAPSHOT_WARNING_BYTES:  # only a full State gets this big
            _check_snapshot_size(len(data))
        return data

    def _on_command(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        """The ack of a command that needs no host call."""
        op = cmd.op
        if op in ("drain", "undrain"):
            self._apply_status("draining" if op == "drain" else "active")
            return _ack(cmd, ok=True)
        return _ack(cmd, ok=False, error=f"unknown command op {op!r}")

    def _lookup(self, room_id: str | None) -> tuple[int, bool]:
        """How many rooms the host holds, and whether one has the id ``room_id``."""
        manager = self._manager
        if manager is not None:
            return len(manager._rooms), room_id is not None and room_id in manager._rooms
        rooms = list(self._host.rooms())
        return len(rooms), room_id is not None and any(view.id == room_id for view in rooms)

    async def _create(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        config = self._config
        if not config.auto_create:
            return _ack(cmd, ok=False, error="auto_create is disabled on this instance")
        if not cmd.room_type:
            return _ack(cmd, ok=False, error="create needs a room_type")
        room_id = cmd.room_id or None
        try:
            options = wire.parse_object_text(cmd.options, wire.MAX_OPTIONS_BYTES, "options")
        except ValueError as exc:
            return _ack(cmd, ok=False, error=str(exc))
        if options and not self._takes_options:
            return _ack(cmd, ok=False, error=_NO_OPTIONS)
        try:
            count, exists = self._lookup(room_id)
            max_rooms = config.capacity.max_rooms
            if max_rooms is not None and count >= max_rooms:
                return _ack(cmd, ok=False, error=f"capacity reached: max_rooms={max_rooms}")
            if exists:
                raise RoomExistsError(room_id or "")
            if options:
                view = await self._host.create_room(cmd.room_type, room_id, options)
            else:
                view = await self._host.create_room(cmd.room_type, room_id)
            created = agent_pb2.AckRoom(id=view.id, type=view.type)
        except RoomExistsError as exc:
            return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, exists=True, error=str(exc))
        except Exception as exc:
            logger.warning("create command failed type=%s: %s", cmd.room_type, describe(exc))
            return _ack(cmd, ok=False, error=describe(exc))
        self._snapshot.mark_fleet(created.id)
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True, room=created)

    async def _destroy(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        room_id = cmd.room_id
        if not room_id:
            return _ack(cmd, ok=False, error="destroy needs a room_id")
        try:
            _, present = self._lookup(room_id)
            destroyed = present and await self._host.destroy_room(room_id)
        except Exception as exc:
            logger.warning("destroy command failed room=%s: %s", room_id, describe(exc))
            return _ack(cmd, ok=False, error=describe(exc))
        self._snapshot.forget(room_id)
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True, already_gone=not destroyed)


_POLL_HEAD: Final = wire.HEADER + b"\x12"  # Frame.poll: field 2, length-delimited


def _quick_poll(data: bytes) -> tuple[str, str | None, str] | None:
    """``(req_id, known_hash, status)`` of a message that is exactly one plain Poll, read
    without building messages; ``None`` for anything else (the codec then decides)."""
    end = len(data)
    if end < 4 or data[3] != end - 4 or not data.startswith(_POLL_HEAD):
        return None
    req_id, known, status = "", None, ""
    at = 4
    try:
        while at < end:
            tag, start = data[at], at + 2
            at = start + data[at + 1]
            if data[start - 1] >= 0x80 or at > end:
                return None
            if tag == 0x0A:
                req_id = data[start:at].decode()
            elif tag == 0x12:
                known = data[start:at].decode()
            elif tag == 0x1A:
                status = data[start:at].decode()
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    return req_id, known, status


def _manager(host: RoomHost) -> RoomManager | None:
    """``host`` when it is a :class:`RoomManager` listing its own rooms: then its room
    dict answers what the agent would otherwise learn by listing every room."""
    if isinstance(host, RoomManager) and type(host).rooms is RoomManager.rooms:
        return host
    return None


def _takes_options(host: RoomHost) -> bool:
    """Whether ``host.create_room`` takes a third (options) argument; a host written
    before create options existed takes only ``(room_type, room_id)``."""
    try:
        signature = inspect.signature(host.create_room)
    except (TypeError, ValueError):
        return True  # not introspectable: let the call itself decide
    try:
        signature.bind("type", "id", {})
    except TypeError:
        return False
    return True


def _check_snapshot_size(size: int) -> None:
    share = 100 * size / wire.MAX_FRAME_BYTES
    if size >= _SNAPSHOT_ERROR_BYTES:
        logger.error(
            "snapshot is %d bytes (%.0f%% of the %d-byte frame limit): past the limit the "
            "orchestrator kicks the agent and it falls into a reconnect loop; "
            "host fewer rooms per instance or run more instances",
            size,
            share,
            wire.MAX_FRAME_BYTES,
        )
    elif size >= _SNAPSHOT_WARNING_BYTES:
        logger.warning(
            "snapshot is %d bytes (%.0f%% of the %d-byte frame limit); "
            "consider fewer rooms per instance or more instances",
            size,
            share,
            wire.MAX_FRAME_BYTES,
        )
