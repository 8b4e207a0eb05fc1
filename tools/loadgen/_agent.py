"""One simulated agent: the agent side of protocol 3 over :class:`WsClient`.

It answers every Poll with a State — hash-only when the poll's ``known_hash`` is its
current snapshot hash, full otherwise (or as a ``policy`` forces, for floor servers that
do not track hashes) — and every Command with an Ack, like ``fleet_agent`` does.
Snapshot hashes are the real :func:`fleet_agent.wire.snapshot_hash`; replies are built
from precomputed tails (:mod:`._frames`).

Matchmaking fields (CONTRACT §11), off unless asked for: every room can report
``max_connections`` (seats) and metadata. The metadata is one JSON object for the whole
fleet, by default plus the room's own id under ``"room"``, so no two rooms report the
same text (the orchestrator caches what it derives from a text by content, which one
shared text would always hit). Its canonical text is a template filled with the room id,
built once per room and kept with it. The agents never accept seat tickets: a
reservation ends by its TTL or a ``DELETE``.

Behaviours: ``ok``; ``silent`` (answers the first poll, then nothing: stale, then
evicted); ``late`` (every 5th reply arrives 1.5 heartbeats late, which must cost
nothing); ``garbage`` (one undecodable message per connection: kicked with 4002).
Reconnecting follows the real agent (``fleet_agent``'s dial plan and backoff), keeping
the ``process_uid``: a *pass* dials the URLs in order and moves on at once after a failed
dial, a standby's ``Fleet-Leader`` hint is dialled next (one per pass), and only a pass
without a Hello waits the agent's jittered backoff (0.5 s doubling to 30 s, restarting at
every Hello). After a drop the next pass starts at the URL that was in use, after one
backoff step; after a close 4010 (``not leader``) it starts at the next URL at once (it
does not watch for an orchestrator that stops polling). The cost per agent is one small
:class:`~fleet_agent._failover.DialPlan` and a counter.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from rivalis.fleet.v3 import agent_pb2

from fleet_agent import Backoff, wire
from fleet_agent._backoff import reconnect_delay
from fleet_agent._failover import DialPlan

from ._frames import AGENT_VERSION, ack_frame, full_tail, hash_tail, state_frame
from ._histogram import Histogram
from ._wsclient import WsClient

__all__ = ["BEHAVIOURS", "AgentStats", "Behaviour", "ReplyPolicy", "RoomFields", "SimAgent"]

Behaviour = Literal["ok", "silent", "late", "garbage"]
BEHAVIOURS: Final[tuple[Behaviour, ...]] = ("ok", "silent", "late", "garbage")
ReplyPolicy = Literal["auto", "hash", "full"]

_TAG_HELLO, _TAG_POLL, _TAG_CMD = 0x0A, 0x12, 0x22
_LATE_EVERY: Final = 5
# Rooms end as matches do: past this many, a create ends the agent's oldest room, so a
# long create burst on one agent stays inside SPEC's 50,000-room snapshot limit.
MAX_ROOMS_KEPT: Final = 20_000
_LATE_FACTOR: Final = 1.5
_GARBAGE: Final = wire.HEADER + b"\xff\xff\xff\xff\x0f"
_BACKOFF: Final = Backoff()  # the real agent's default
_NOT_LEADER: Final = 4010
_REFUSED: Final = 503  # a standby (NOT_LEADER) or a node not ready: try the next URL


@dataclass
class AgentStats:
    """Counters shared by every agent of one worker process."""

    hellos: int = 0
    polls: int = 0
    replies_hash: int = 0
    replies_full: int = 0  # deltas included
    replies_delta: int = 0
    bytes_full: int = 0
    commands: int = 0
    acks: int = 0
    conn_changes: int = 0
    rooms_created: int = 0
    rooms_destroyed: int = 0
    closes: Counter[str] = field(default_factory=Counter)  # "<behaviour>:<close code>"
    errors: Counter[str] = field(default_factory=Counter)
    # dials that failed the way failover expects: a node down, a standby's 503
    dial_failures: Counter[str] = field(default_factory=Counter)
    lateness: Histogram = field(default_factory=Histogram)  # ok agents' polls vs schedule

    def reset(self) -> None:
        fresh = AgentStats()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


class RoomFields:
    """What every room of an agent reports beyond its type and connections: the seats
    (``max_connections``) and the metadata text, from a template made once. With
    ``unique``, the metadata gains the room's id under ``"room"``; without, every room
    reports the same text."""

    __slots__ = ("_head", "_tail", "max_connections")

    _MARK: Final = "\x00room\x00"

    def __init__(
        self,
        max_connections: int | None,
        metadata: Mapping[str, Any] | None,
        unique: bool = True,
    ) -> None:
        self.max_connections = max_connections
        self._head: str | None = None  # None: no metadata
        self._tail: str | None = None  # None: the same text (the head) for every room
        if metadata is None:
            return
        if not unique:
            self._head = wire.canonical_json(metadata)
            return
        text = wire.canonical_json({**metadata, "room": self._MARK})
        quoted = json.dumps(self._MARK, ensure_ascii=False)
        self._head, _, self._tail = text.partition(quoted)

    def metadata(self, room_id: str) -> str:
        """The canonical metadata text of one room ("" when the fleet has none)."""
        if self._head is None:
            return ""
        if self._tail is None:
            return self._head
        return f"{self._head}{json.dumps(room_id, ensure_ascii=False)}{self._tail}"


def _parse_poll(data: bytes) -> tuple[bytes, bytes | None]:
    """``(req_id, known_hash)`` of a Poll frame (``data[2]`` is the poll tag)."""
    pos = 3
    length = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    end = pos + length
    req_id = b""
    known: bytes | None = None
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag & 7 == 2:
            size = data[pos]
            pos += 1
            if size >= 0x80:  # two-byte length (never for these short strings)
                size = (size & 0x7F) | (data[pos] << 7)
                pos += 1
            value = data[pos : pos + size]
            pos += size
            if tag == 0x0A:
                req_id = value
            elif tag == 0x12:
                known = value
        else:  # a varint field: skip it
            while data[pos] & 0x80:
                pos += 1
            pos += 1
    return req_id, known


class SimAgent:
    """State of one simulated game server; survives reconnects."""

    def __init__(
        self,
        *,
        worker: int,
        index: int,
        behaviour: Behaviour,
        rooms: int,
        room_types: tuple[str, ...],
        labels: dict[str, str],
        max_rooms: int | None,
        stats: AgentStats,
        urls: tuple[str, ...],
        dial: Callable[[SimAgent, str], None],
        fields: RoomFields | None = None,
        deltas: bool = True,
    ) -> None:
        self.behaviour: Behaviour = behaviour
        self.deltas = deltas
        self.name = f"lg{worker}-{index}-{behaviour}"
        self.process_uid = "p_" + secrets.token_hex(12)
        self.endpoint_url = f"ws://127.0.0.1:{20000 + index % 40000}"
        self.labels = labels
        self.max_rooms = max_rooms
        self.room_types = room_types
        self.status = "active"
        self.rooms: dict[str, tuple[str, int, str]] = {}
        for k in range(rooms):
            self.rooms[f"r{worker}-{index}-{k}"] = (room_types[k % len(room_types)], k % 7, "local")
        self.fields = fields
        self._metadata: dict[str, str] = {}  # room id -> metadata text, with ``fields``
        self._prefix = f"{worker}-{index}"
        self._made = 0
        self.stats = stats
        self._dial = dial
        self.plan = DialPlan(urls)
        self._attempt = 1  # passes without a Hello in a row, plus one
        self._hello_here = False  # the current connection got its Hello
        self.handshake: asyncio.Future[None] | None = None  # a dial waiting for its Hello
        self.client: WsClient | None = None
        self.instance_id = ""
        self.heartbeat_s = 1.0
        self.seq = 0
        self.joined = False  # the current connection got its Hello
        self.policy: ReplyPolicy = "auto"
        self.change_every_poll = False
        self.pending_replace = 0
        self.stopping = False
        self._dirty = True
        self._hash = b""
        self._hash_tail = b""
        self._full_tail: bytes | None = None
        self._row_list: list[wire.RoomRow] = []  # the rooms the hash was made of
        # Deltas (docs/snapshots-at-scale.md): accepted on this connection, and the hash
        # and rooms of the last full reply or delta sent on it.
        self._delta_ok = False
        self._sent_hash: bytes | None = None
        self._sent_rows: dict[str, wire.RoomRow] = {}
        self._last_poll: float | None = None
        self._polls_here = 0
        self._replied = False
        self._garbage: asyncio.TimerHandle | None = None

    # --- connection ---------------------------------------------------------------

    def start_pass(self, first: str | None = None) -> None:
        """Dial the URLs once, from ``first`` (wrapping around), until a Hello."""
        if self.stopping:
            return
        self.plan.begin(first)
        self._dial_next()

    def _dial_next(self) -> None:
        url = self.plan.next()
        if url is None:  # a whole pass without a Hello
            self._back_off(None)
        else:
            self._dial(self, url)

    def _back_off(self, first: str | None) -> None:
        delay = reconnect_delay(self._attempt, _BACKOFF)
        self._attempt += 1
        asyncio.get_running_loop().call_later(delay, self.start_pass, first)

    def dial_failed(self, leader: str | None = None) -> None:
        """The dial ended without a Hello: the next URL of this pass (a hint first)."""
        if self.stopping:
            return
        if leader is not None:
            self.plan.follow(leader)
        self._dial_next()

    def connect_failed(self, exc: OSError) -> None:
        if isinstance(exc, ConnectionRefusedError):  # nothing listens there (a node down)
            self.stats.dial_failures["connect refused"] += 1
        else:
            self.stats.errors[f"connect failed: {type(exc).__name__}"] += 1
        self.dial_failed()

    def new_client(self, host: str, path: str, key: str) -> WsClient:
        self._hello_here = False
        self.client = WsClient(
            host=host,
            path=path,
            protocols=(wire.SUBPROTOCOL, key),
            on_open=self._on_open,
            on_message=self.on_message,
            on_close=self._on_close,
        )
        return self.client

    def _on_open(self) -> None:
        self.seq = 0
        self._last_poll = None
        self._polls_here = 0
        self._replied = False

    def _handshake_over(self) -> None:
        handshake = self.handshake
        if handshake is not None and not handshake.done():
            handshake.set_result(None)

    def _on_close(self, code: int, http_status: int | None) -> None:
        self.joined = False
        self._handshake_over()
        if self._garbage is not None:
            self._garbage.cancel()
            self._garbage = None
        if self.stopping:
            return
        if http_status == _REFUSED:
            self.stats.dial_failures[f"upgrade refused: HTTP {http_status}"] += 1
        elif http_status is not None:
            self.stats.errors[f"upgrade refused: HTTP {http_status}"] += 1
        else:
            self.stats.closes[f"{self.behaviour}:{code}"] += 1
        client = self.client
        if not self._hello_here:
            self.dial_failed(client.leader if client is not None else None)
        elif code == _NOT_LEADER:  # this node stopped leading: the next URL at once
            self.start_pass(self.plan.after(self.plan.current))
        else:  # the URL in use again, after one backoff step
            self._back_off(self.plan.current)

    # --- snapshot -----------------------------------------------------------------

    def _rows(self) -> list[wire.RoomRow]:
        fields = self.fields
        if fields is None:
            return [(rid, t, c, o) for rid, (t, c, o) in self.rooms.items()]
        texts = self._metadata
        if len(texts) > 2 * len(self.rooms) + 64:  # forget the rooms that ended
            self._metadata = texts = {rid: texts[rid] for rid in self.rooms if rid in texts}
        seats = fields.max_connections
        rows: list[wire.RoomRow] = []
        for rid, (t, c, o) in self.rooms.items():
            text = texts.get(rid)
            if text is None:
                text = texts[rid] = fields.metadata(rid)
            rows.append((rid, t, c, o, text, seats, False))
        return rows

    def _refresh(self) -> None:
        rooms = self._row_list = self._rows()
        digest = wire.snapshot_hash(
            name=self.name,
            process_uid=self.process_uid,
            agent_version=AGENT_VERSION,
            protocol_version=wire.PROTOCOL_MAJOR,
            endpoint_url=self.endpoint_url,
            labels=self.labels,
            max_connections=None,
            max_rooms=self.max_rooms,
            auto_create=True,
            room_types=self.room_types,
            rooms=rooms,
            status=self.status,
        )
        self._hash = digest.encode()
        self._hash_tail = hash_tail(digest)
        self._full_tail = None
        self._dirty = False

    def _full(self) -> bytes:
        tail = self._full_tail
        if tail is None:
            tail = self._full_tail = self._tail(self._row_list)
        return tail

    def _tail(
        self, rooms: list[wire.RoomRow], base: bytes = b"", gone: list[str] | None = None
    ) -> bytes:
        return full_tail(
            digest=self._hash.decode(),
            name=self.name,
            process_uid=self.process_uid,
            endpoint_url=self.endpoint_url,
            labels=self.labels,
            max_rooms=self.max_rooms,
            room_types=self.room_types,
            rooms=rooms,
            status=self.status,
            base_hash=base,
            removed=gone or (),
        )

    def _full_or_delta(self, known: bytes | None) -> bytes:
        """A full reply's tail, or a delta's when the orchestrator holds this connection's
        last reply (its poll carries that hash) and accepts deltas."""
        if not self._delta_ok:
            return self._full()
        sent = self._sent_rows
        if self.policy == "auto" and known is not None and known == self._sent_hash:
            changed = [row for row in self._row_list if sent.get(row[0]) != row]
            rooms = self.rooms
            tail = self._tail(changed, known, [rid for rid in sent if rid not in rooms])
            self.stats.replies_delta += 1
        else:
            tail = self._full()
        self._sent_hash = self._hash
        self._sent_rows = {row[0]: row for row in self._row_list}
        return tail

    def bump_connections(self) -> None:
        """One room's connection count changes (a player joined or left)."""
        if not self.rooms:
            return
        window = min(len(self.rooms), 64)  # a random room among the first 64
        room_id = next(itertools.islice(iter(self.rooms), random.randrange(window), None))
        room_type, connections, origin = self.rooms[room_id]
        self.rooms[room_id] = (room_type, (connections + 1) % 50, origin)
        self._dirty = True
        self.stats.conn_changes += 1

    def _replace_rooms(self, count: int) -> None:
        """Destroy ``count`` rooms and create as many; new ids carry the time they are
        first reported (``x<monotonic µs>-…``) so event streams can time delivery."""
        stamp = time.monotonic_ns() // 1000
        for _ in range(count):
            if self.rooms:
                oldest = next(iter(self.rooms))
                room_type = self.rooms.pop(oldest)[0]
                self.stats.rooms_destroyed += 1
            else:
                room_type = self.room_types[0]
            self._made += 1
            self.rooms[f"x{stamp}-{self._prefix}-{self._made}"] = (room_type, 1, "local")
            self.stats.rooms_created += 1
        self._dirty = True

    def add_rooms(self, count: int) -> None:
        base = len(self.rooms)
        for k in range(base, base + count):
            self.rooms[f"a{self._prefix}-{k}"] = (
                self.room_types[k % len(self.room_types)],
                1,
                "local",
            )
        self._dirty = True

    # --- frames -------------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        if len(data) < 3 or data[0] != wire.PROTOCOL_MAJOR:
            self.stats.errors["malformed frame from server"] += 1
            return
        tag = data[2]
        if tag == _TAG_POLL:
            self._on_poll(data)
        elif tag == _TAG_CMD:
            self._on_command(agent_pb2.Frame.FromString(data[2:]).cmd)
        elif tag == _TAG_HELLO:
            hello = agent_pb2.Frame.FromString(data[2:]).hello
            self.instance_id = hello.instance_id
            self._delta_ok = self.deltas and "deltas" in hello.features
            self._sent_hash, self._sent_rows = None, {}
            self.heartbeat_s = (hello.heartbeat_ms or 1000) / 1000.0
            self.joined = True
            self._hello_here = True
            self._attempt = 1  # the backoff restarts at every Hello
            self._handshake_over()
            self.stats.hellos += 1
            if self.behaviour == "garbage":
                delay = self.heartbeat_s * random.uniform(1.0, 3.0)
                self._garbage = asyncio.get_running_loop().call_later(delay, self._send_garbage)
        else:
            self.stats.errors[f"unexpected frame tag {tag:#x} from server"] += 1

    def _on_poll(self, data: bytes) -> None:
        stats = self.stats
        stats.polls += 1
        now = time.monotonic()
        last = self._last_poll
        self._last_poll = now
        self._polls_here += 1
        behaviour = self.behaviour
        if last is not None and behaviour == "ok":
            stats.lateness.add(max(0.0, now - last - self.heartbeat_s))
        if behaviour == "silent" and self._replied:
            return
        req_id, known = _parse_poll(data)
        if self.change_every_poll:
            self.bump_connections()
        if self.pending_replace:
            self._replace_rooms(self.pending_replace)
            self.pending_replace = 0
        if self._dirty:
            self._refresh()
        policy = self.policy
        full = policy == "full" or (policy == "auto" and known != self._hash)
        self.seq += 1
        if full:
            frame = state_frame(req_id, self.seq, self._full_or_delta(known))
            stats.replies_full += 1
            stats.bytes_full += len(frame)
        else:
            frame = state_frame(req_id, self.seq, self._hash_tail)
            stats.replies_hash += 1
        self._replied = True
        client = self.client
        if client is None:
            return
        if behaviour == "late" and self._polls_here % _LATE_EVERY == 0:
            asyncio.get_running_loop().call_later(
                self.heartbeat_s * _LATE_FACTOR, client.send, frame
            )
            return
        client.send(frame)

    def _on_command(self, cmd: agent_pb2.Command) -> None:
        self.stats.commands += 1
        ack = agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True)
        if cmd.op == "create":
            if cmd.room_id in self.rooms:
                ack.ok = False
                ack.exists = True
            else:
                self.rooms[cmd.room_id] = (cmd.room_type, 0, "fleet")
                if len(self.rooms) > MAX_ROOMS_KEPT:
                    del self.rooms[next(iter(self.rooms))]
                    self.stats.rooms_destroyed += 1
                ack.room.id = cmd.room_id
                ack.room.type = cmd.room_type
                self._dirty = True
        elif cmd.op == "destroy":
            if self.rooms.pop(cmd.room_id, None) is None:
                ack.already_gone = True
            else:
                self._dirty = True
        elif cmd.op in ("drain", "undrain"):
            self.status = "draining" if cmd.op == "drain" else "active"
            self._dirty = True
        else:
            ack.ok = False
            ack.error = "unknown op"
        client = self.client
        if client is not None and client.send(ack_frame(ack)):
            self.stats.acks += 1

    def _send_garbage(self) -> None:
        self._garbage = None
        if self.client is not None:
            self.client.send(_GARBAGE)
