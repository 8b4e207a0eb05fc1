"""The fleet service: reads, placement and control over the read model (CONTRACT §6).

``orch.fleet`` is an instance of :class:`Fleet`. REST and gRPC translate onto these
methods, so every surface shares one behaviour. Validation and placement happen
before the first ``await``: choosing an instance and reserving its slot and the room
id is atomic on the event loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from rivalis.fleet.v3 import agent_pb2

from fleet_agent.wire import MAX_OPTIONS_BYTES, object_text

from ._capacity import CapacityRow, capacity_rows
from ._commands import Commands, CommandSink, PendingCommand
from ._errors import ErrorCode, FleetError
from ._events import EventHub, EventType
from ._ids import generate_room_id, is_valid_room_id
from ._instance import Instance, _Room
from ._membership import Membership
from ._metrics import NULL_METER, CensusRow, Meter
from ._models import FleetStats, InstanceInfo, RoomInfo
from ._orphans import OrphanHolds
from ._placement import DEFAULT, Placement, ValidationError, check_pin, choose
from ._read_model import ReadModel
from ._replies import DeltaBaseError, Reply, apply_reply
from ._roster import Roster
from ._seat_service import SeatService
from ._seats import SeatLedger
from ._snapshot import Snapshot, SnapshotRejectedError, StateLayout, parse_snapshot
from ._sync import SyncFlusher

__all__ = ["Fleet"]

log = logging.getLogger("fleet.server")

_ID_ATTEMPTS = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _options_text(options: Mapping[str, Any] | None) -> str:
    if options is None:
        return ""
    try:
        return object_text(options, MAX_OPTIONS_BYTES, "options")
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Fleet:
    """Reads and control of the whole fleet; every method runs on the event loop."""

    def __init__(
        self,
        *,
        command_timeout_ms: int,
        events: EventHub,
        orphan_hold_ms: int = 60_000,
        rng: random.Random | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        meter: Meter = NULL_METER,
    ) -> None:
        self._read = ReadModel()
        self._meter = meter
        self._events = events
        self._rng = rng or random.Random()
        self._clock_ms = clock_ms
        self._links: dict[str, CommandSink] = {}
        self._reserved: set[str] = set()
        self._commands = Commands(command_timeout_ms, self._settled)
        self.orphans: Final = OrphanHolds(orphan_hold_ms, clock_ms)
        self.roster: Final = Roster(clock_ms)
        self.leads: Callable[[], bool] = lambda: True  # the cluster role decides
        self._flusher = SyncFlusher(self._read, events)
        self._ledger = SeatLedger(clock_ms, self._seats_changed)
        self._seats = SeatService(
            self._read,
            self._ledger,
            create_room=self.create_room,
            ticket_key=lambda instance: self._require_link(instance).ticket_key,
            require_lead=self._require_lead,
        )
        self.reserve_seats: Final = self._seats.reserve_seats
        self.release_seats: Final = self._seats.release_seats

    # --- reads ------------------------------------------------------------------

    @property
    def stats(self) -> FleetStats:
        return self._read.stats

    @property
    def state_hash(self) -> str:
        return self._read.state_hash

    def counts(self) -> tuple[int, int, int]:
        """Instances, rooms and connections, as :attr:`stats` has them, without hashing."""
        return self._read.counts()[:3]

    @property
    def instances(self) -> list[InstanceInfo]:
        return self._read.instance_infos()

    @property
    def rooms(self) -> list[RoomInfo]:
        return self._read.room_infos()

    def census(self) -> Iterator[CensusRow]:
        """Every instance in the read model as the metrics count it."""
        for i in self._read.joined:
            status = "stale" if i.stale else "draining" if i.status == "draining" else "active"
            yield i.id, status, i.connections, i.room_infos()

    def capacity(self, group_by: str | None = None, type: str | None = None) -> list[CapacityRow]:
        """The capacity signal (CONTRACT §14): one row per value of label ``group_by``."""
        if group_by is not None and (not isinstance(group_by, str) or not group_by):
            raise ValidationError("groupBy must be a non-empty label name")
        return capacity_rows(self._read.joined, group_by, type or None)

    def get_instance(self, instance_id: str) -> InstanceInfo | None:
        instance = self._read.instance(instance_id)
        return instance.info() if instance is not None else None

    def get_room(self, room_id: str) -> RoomInfo | None:
        return self._read.room(room_id)

    def position(self, row: InstanceInfo | RoomInfo) -> tuple[int, str]:
        """Where a row of a current list read sits in list order, for paging cursors:
        its instance's join sequence, plus the agent-reported room id for a room."""
        if isinstance(row, InstanceInfo):
            instance = self._read.instance(row.id)
            return ((instance.join_seq or 0) if instance is not None else 0, "")
        found = self._read.resolve(row.id)
        if found is None:
            return (0, "")
        instance, raw = found
        return (instance.join_seq or 0, raw)

    def find_rooms(
        self,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        instance_id: str | None = None,
    ) -> list[RoomInfo]:
        if instance_id is not None:
            one = self._read.instance(instance_id)
            instances = [one] if one is not None else []
        else:
            instances = list(self._read.joined)
        if labels:
            wanted = dict(labels)
            instances = [
                i
                for i in instances
                if i.snapshot is not None
                and all(i.snapshot.labels.get(k) == v for k, v in wanted.items())
            ]
        rooms = self._read.room_infos(instances)
        if type is not None:
            rooms = [room for room in rooms if room.type == type]
        return rooms

    # --- control ----------------------------------------------------------------

    async def create_room(
        self,
        type: str,
        room_id: str | None = None,
        placement: Placement | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> RoomInfo:
        """Place and create a room; resolves on the agent's ack with the room in every read.
        ``options`` (a JSON object, ≤ 4 KiB) reach the game server with the command."""
        if not isinstance(type, str) or not type:
            raise ValidationError("room type must be a non-empty string")
        if room_id is not None and (not isinstance(room_id, str) or not is_valid_room_id(room_id)):
            raise ValidationError("room id must match ^[A-Za-z0-9_-]{1,64}$")
        if placement is None:
            placement = DEFAULT
        elif not isinstance(placement, Placement):
            raise ValidationError("placement must be a Placement")
        options_text = _options_text(options)
        self._require_lead()
        if room_id is not None and not self.roster.settled:
            raise FleetError(
                ErrorCode.NOT_READY,
                f"settling: {self.roster.awaited} recorded game servers are not back yet; "
                "creates that name their room id wait (creates without one do not)",
                retry_after_s=self.roster.retry_after_s(),
            )
        room_id = self._reserve_id(room_id)
        try:
            instance = self._place(type, placement)
            sink = self._require_link(instance)
            pending = self._commands.start(instance, sink, "create", room_id, type, options_text)
        except BaseException:
            self._reserved.discard(room_id)
            raise
        instance.create_started()
        self._read.index.refresh(instance)
        await self._commands.run(pending)
        # Listed by now, unless the instance left since the ack: then what the ack said.
        return instance.acked_room_info(room_id, type)

    async def destroy_room(self, room_id: str) -> None:
        """Destroy a room by public id; resolves on the ack with the room gone from reads."""
        if not isinstance(room_id, str):
            raise ValidationError("room id must be a string")
        self._require_lead()
        found = self._read.resolve(room_id)
        if found is None:
            raise FleetError(ErrorCode.ROOM_NOT_FOUND, "room not found")
        instance, raw = found
        sink = self._require_link(instance)
        pending = self._commands.start(instance, sink, "destroy", raw)
        await self._commands.run(pending)

    async def drain_instance(self, instance_id: str) -> None:
        await self._status_command(instance_id, "drain")

    async def undrain_instance(self, instance_id: str) -> None:
        await self._status_command(instance_id, "undrain")

    # --- agent links (called by the transport) ------------------------------------

    def attach(self, instance_id: str, sink: CommandSink) -> Instance:
        self._links[instance_id] = sink
        return self._read.connect(instance_id)

    def detach(self, instance: Instance, reason: str, *, clean: bool = False) -> None:
        """Teardown (SPEC §3.6, CONTRACT §9): hold the ids the instance accounted for on
        behalf of its process, fail pending commands, forget the instance, emit events.

        ``clean`` is a leave the agent asked for (close 1000): its listed rooms are gone
        with it, so only the creates it never acked stay held.
        """
        sink = self._links.pop(instance.id, None)
        self._hold_orphans(instance, sink, clean)
        if sink is not None:
            self._commands.fail_all(sink, reason)
        if instance.joined and not instance.removed and instance.snapshot is not None:
            self.roster.left(instance.snapshot.process_uid, clean=clean)
        self._emit(self._read.remove(instance))

    def _hold_orphans(self, instance: Instance, sink: CommandSink | None, clean: bool) -> None:
        if instance.removed:
            return
        held: set[str] = set(instance.holds)
        if sink is not None:
            held.update(p.room_id for p in sink.pending.values() if p.op == "create" and p.sent)
        if not clean:
            held.update(room.public for room in instance.rooms.values())
        snapshot = instance.snapshot
        self.orphans.hold(snapshot.process_uid if snapshot is not None else instance.id, held)

    def on_state(
        self, instance: Instance, state: agent_pb2.State | Reply, layout: StateLayout | None = None
    ) -> None:
        """A State that answered the outstanding poll: one frame, or a reply in parts or a
        delta (docs/snapshots-at-scale.md); ``layout`` of one frame (._state_layout)."""
        if instance.removed:
            return
        if isinstance(state, agent_pb2.State) and not state.full:
            if self.orphans and instance.snapshot is not None:
                self.orphans.release(instance.snapshot.process_uid)
            self._emit(self._read.touch(instance, self._clock_ms()))
            return
        sink = self._links.get(instance.id)
        grant = sink.grant if sink is not None else None
        touched: frozenset[str] | None = None
        if self._stale(instance, state.header.seq if isinstance(state, Reply) else state.seq):
            return
        try:
            if isinstance(state, Reply):
                snapshot, touched = apply_reply(state, instance.snapshot, grant, layout)
            else:
                snapshot = parse_snapshot(state, instance.snapshot, grant, layout)
        except SnapshotRejectedError as exc:
            log.warning("snapshot rejected instance=%s reason=%s", instance.id, exc)
            return
        except DeltaBaseError as exc:
            log.warning("delta dropped instance=%s reason=%s", instance.id, exc)
            return
        self._take(instance, snapshot, touched)

    def _stale(self, instance: Instance, seq: int) -> bool:
        """Whether a full reply with ``seq`` is dropped (SPEC §3: not after the last applied)."""
        if not instance.joined or seq > instance.last_seq:
            return False
        last = instance.last_seq
        log.warning("snapshot dropped instance=%s seq=%d last_applied=%d", instance.id, seq, last)
        return True

    def _take(self, instance: Instance, snapshot: Snapshot, touched: frozenset[str] | None) -> None:
        first = not instance.joined
        try:
            events = self._read.apply_snapshot(instance, snapshot, self._clock_ms(), touched)
        except Exception:
            log.exception("snapshot apply failed instance=%s", instance.id)
            return
        if first:
            self.roster.joined(snapshot.process_uid)
        if snapshot.accepted_reservations:
            self._ledger.accepted(snapshot.accepted_reservations)
        # The process has said what it has: ids it lists are its rooms, the rest are free.
        self.orphans.release(snapshot.process_uid)
        self._emit(events)

    def on_ack(self, sink: CommandSink, ack: agent_pb2.Ack) -> bool:
        return self._commands.acknowledge(sink, ack)

    def mark_stale(self, instance: Instance) -> None:
        instance.mark_stale()
        if instance.joined and not instance.removed:
            self._events.emit([(EventType.INSTANCE_STALE, instance.info())])

    # --- the membership record (CONTRACT §9) --------------------------------------

    def track_membership(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever what :meth:`capture_membership` returns changes."""
        self.orphans.on_change = on_change
        self.roster.on_change = on_change

    def forget_membership(self) -> None:
        """Drop every hold and process record (a standby: the leader keeps them)."""
        self.orphans.clear()
        self.roster.clear()
        self.track_membership(lambda: None)

    def capture_membership(self) -> Membership:
        return Membership(
            processes=self.roster.records(self.orphans.hold_ms),
            orphans=tuple(self.orphans),
            saved_at=self._clock_ms(),
        )

    def restore(self, membership: Membership | None, settle_ms: int) -> None:
        """Take over a stored record: its holds (with their recorded expiry) and a
        settle wait for its processes. ``None`` is an unreadable record: wait the whole
        ``settle_ms`` for explicit ids, since nobody knows who was there."""
        if membership is None:
            self.roster.restore({}, settle_ms, wait_all=True)
            return
        self.orphans.restore(membership.orphans)
        self.roster.restore(membership.processes, settle_ms)

    # --- events -------------------------------------------------------------------

    def _emit(self, events: list[tuple[str, Any]]) -> None:
        self._flusher.emit(events)

    def _seats_changed(self, room: _Room) -> None:
        self._read.seats_changed(room)
        self._emit([])

    def close(self) -> None:
        """Emit any owed ``sync`` now and stop scheduling (orchestrator shutdown)."""
        self.orphans.close()
        self._ledger.close()
        self._flusher.close()

    # --- internals --------------------------------------------------------------

    def _reserve_id(self, room_id: str | None) -> str:
        if room_id is not None:
            if room_id in self._reserved or self._is_taken(room_id):
                raise FleetError(ErrorCode.ROOM_EXISTS, f"room {room_id} exists")
            self._reserved.add(room_id)
            return room_id
        for _ in range(_ID_ATTEMPTS):
            candidate = generate_room_id()
            if candidate not in self._reserved and not self._is_taken(candidate):
                self._reserved.add(candidate)
                return candidate
        raise FleetError(ErrorCode.ROOM_EXISTS, "no free room id found")

    def _is_taken(self, room_id: str) -> bool:
        return self._read.is_taken(room_id) or room_id in self.orphans

    def _place(self, room_type: str, placement: Placement) -> Instance:
        if placement.instance_id is not None:
            instance = self._read.instance(placement.instance_id)
            if instance is None:
                raise FleetError(ErrorCode.INSTANCE_NOT_FOUND, "instance not found")
            check_pin(instance, placement.force)
            return instance
        if placement.process_uid is not None:
            matches = self._read.instances_by_process_uid(placement.process_uid)
            if not matches:
                raise FleetError(ErrorCode.INSTANCE_NOT_FOUND, "instance not found")
            instance = max(matches, key=lambda i: i.join_seq or 0)
            check_pin(instance, placement.force)
            return instance
        return choose(self._read, room_type, placement, self._rng)

    def _require_lead(self) -> None:
        if not self.leads():
            raise FleetError(ErrorCode.NOT_LEADER, "this orchestrator is not the leader")

    def _require_link(self, instance: Instance) -> CommandSink:
        sink = self._links.get(instance.id)
        if sink is None:
            raise FleetError(
                ErrorCode.INSTANCE_DISCONNECTED, f"instance {instance.id} is disconnected"
            )
        return sink

    async def _status_command(self, instance_id: str, op: str) -> None:
        if not isinstance(instance_id, str):
            raise ValidationError("instance id must be a string")
        self._require_lead()
        instance = self._read.instance(instance_id)
        if instance is None:
            raise FleetError(ErrorCode.INSTANCE_NOT_FOUND, "instance not found")
        sink = self._require_link(instance)
        pending = self._commands.start(instance, sink, "drain" if op == "drain" else "undrain")
        await self._commands.run(pending)

    def _settled(self, pending: PendingCommand, outcome: agent_pb2.Ack | FleetError) -> None:
        """Apply a settled command's effects (SPEC §8 table) before its caller resumes."""
        instance = pending.instance
        result = "ok" if isinstance(outcome, agent_pb2.Ack) else outcome.code.value.lower()
        self._meter.command(pending.op, result, time.monotonic() - pending.started)
        events: list[tuple[str, Any]] = []
        if pending.op == "create":
            # The slot moves from in flight to listed (or held): one re-filing after both.
            instance.create_settled()
            self._reserved.discard(pending.room_id)
            if isinstance(outcome, agent_pb2.Ack):  # re-files a joined instance
                events = self._read.add_provisional(instance, pending.room_id, pending.room_type)
            elif outcome.code is ErrorCode.COMMAND_TIMEOUT:
                self._read.hold(instance, pending.room_id)  # re-files it
            elif not instance.removed:
                self._read.index.refresh(instance)
        elif pending.op == "destroy":
            if isinstance(outcome, agent_pb2.Ack):
                events = self._read.hide(instance, pending.room_id)
        elif isinstance(outcome, agent_pb2.Ack) and instance.joined and not instance.removed:
            instance.override_status("draining" if pending.op == "drain" else "active")
        self._emit(events)
