"""The in-memory read model of the fleet (SPEC §1, §2, §5, §7.2, §7.3).

One :class:`~._instance.Instance` per connected agent; an instance is *in the read
model* from its first applied snapshot. Each instance's effective rooms are its last
applied snapshot plus the read-your-write overlay (acked creates added, acked destroys
hidden); public room ids are resolved incrementally (:mod:`._public_ids`).

Every mutation returns the events it causes, already ordered: ``instance:join`` and
the instance's new rooms, then ``room:destroy``; it also marks ``sync_due``, and the
owner collects the ``sync`` event with :meth:`ReadModel.take_sync`, so a burst of
reconciles hashes the fleet once (:mod:`._fleet_hash`). Derived views (instance infos,
stats, state hash, indexes) are cached and rebuilt only after a semantic change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import replace

from ._events import Event, EventType
from ._fleet_hash import EMPTY_HASH, SyncJob, fleet_digest
from ._ids import encode_public_id
from ._instance import Change, Instance, RoomChanges, _Room
from ._models import FleetStats, InstanceInfo, RoomInfo, same_content
from ._placement_index import PlacementIndex
from ._public_ids import PublicIds
from ._snapshot import Snapshot

__all__ = ["Event", "ReadModel", "SyncJob"]

log = logging.getLogger("fleet.server")


class _Pass:
    """What one reconcile changed beyond the instance's rooms, gathered for its events."""

    __slots__ = ("affected", "changed", "destroyed")

    def __init__(self) -> None:
        self.affected: set[str] = set()  # base public ids whose claims changed
        self.changed: set[Instance] = set()  # instances whose views are out of date
        self.destroyed: list[RoomInfo] = []


class ReadModel(PublicIds):
    """All fleet state; every method runs on the orchestrator's event loop."""

    def __init__(self) -> None:
        super().__init__()
        self._instances: dict[str, Instance] = {}  # every live connection
        self._joined: dict[str, Instance] = {}  # in the read model, join order
        self._join_counter = 0
        self._names: dict[str, dict[str, Instance]] = {}  # name -> joined holders
        self._held: dict[str, Instance] = {}
        self._stats: FleetStats | None = None
        self._state_hash: str | None = None
        self._by_id: list[Instance] | None = None  # joined instances sorted by id
        self._unencoded: set[Instance] = set()  # hash entry dropped since the last sync
        self._version = 0  # bumped by every change the fleet hash sees
        self._emitted_hash = EMPTY_HASH
        self.sync_due = False
        self.index = PlacementIndex()

    # --- connections ------------------------------------------------------------

    def connect(self, instance_id: str) -> Instance:
        instance = Instance(instance_id)
        self._instances[instance_id] = instance
        return instance

    def live(self, instance_id: str) -> Instance | None:
        return self._instances.get(instance_id)

    # --- reads ------------------------------------------------------------------

    @property
    def joined(self) -> Iterable[Instance]:
        return self._joined.values()

    def instance(self, instance_id: str) -> Instance | None:
        return self._joined.get(instance_id)

    def instances_by_process_uid(self, process_uid: str) -> list[Instance]:
        return [
            i
            for i in self._joined.values()
            if i.snapshot is not None and i.snapshot.process_uid == process_uid
        ]

    def instance_infos(self) -> list[InstanceInfo]:
        return [instance.info() for instance in self._joined.values()]

    def room(self, public_id: str) -> RoomInfo | None:
        room = self._public.get(public_id)
        return room.room_info() if room is not None else None

    def resolve(self, public_id: str) -> tuple[Instance, str] | None:
        room = self._public.get(public_id)
        return (room.instance, room.raw) if room is not None else None

    def is_taken(self, room_id: str) -> bool:
        """Listed as a public id or held after a create timeout."""
        return room_id in self._public or room_id in self._held

    def hold(self, instance: Instance, raw: str) -> None:
        """Keep ``raw`` taken and one ``maxRooms`` slot used until the next reply."""
        if instance.removed:
            return
        instance.hold(raw)
        self._held[raw] = instance
        self.index.refresh(instance)

    def _clear_holds(self, instance: Instance) -> None:
        if not instance.holds:
            return
        for raw in instance.release_holds():
            if self._held.get(raw) is instance:
                del self._held[raw]
        if instance.joined:
            self.index.refresh(instance)

    def room_infos(self, instances: Iterable[Instance] | None = None) -> list[RoomInfo]:
        out: list[RoomInfo] = []
        for instance in self._joined.values() if instances is None else instances:
            out.extend(instance.info().rooms)
        return out

    @property
    def stats(self) -> FleetStats:
        stats = self._stats
        if stats is None:
            instances, rooms, connections, types = self.counts()
            stats = FleetStats(instances, rooms, connections, types, self.state_hash)
            self._stats = stats
        return stats

    def counts(self) -> tuple[int, int, int, tuple[str, ...]]:
        types: set[str] = set()
        rooms = connections = 0
        for instance in self._joined.values():
            assert instance.snapshot is not None
            types.update(instance.snapshot.room_types)
            rooms += len(instance.rooms)
            connections += instance.connections
        return len(self._joined), rooms, connections, tuple(sorted(types))

    def _ordered(self) -> list[Instance]:
        ordered = self._by_id
        if ordered is None:
            ordered = sorted(self._joined.values(), key=lambda i: i.id)
            self._by_id = ordered
        return ordered

    @property
    def state_hash(self) -> str:
        digest = self._state_hash
        if digest is None:
            digest = fleet_digest([i.hash_entry() for i in self._ordered()])
            self._state_hash = digest
        return digest

    # --- mutations --------------------------------------------------------------

    def apply_snapshot(
        self,
        instance: Instance,
        snapshot: Snapshot,
        now_ms: int,
        touched: AbstractSet[str] | None = None,
    ) -> list[Event]:
        """Apply a validated full reply; the overlay and holds are dropped.

        A reply whose content equals the applied snapshot (the forced full replies of a
        quiet instance) only settles the overlay: nothing is re-derived or re-hashed.
        ``touched`` (a delta's rooms) limits the reconcile to those rooms and the overlay.
        """
        previous = instance.apply(snapshot, now_ms)
        joined = previous is None
        self._clear_holds(instance)
        if previous is not None and not touched and same_content(previous, snapshot):
            return self._settle_overlay(instance)
        if (
            touched is not None
            and previous is not None
            and previous.endpoint_url == snapshot.endpoint_url
        ):
            raws = set(touched).union(instance.settle_overlay())
            self._track_name(instance, snapshot, previous.name)
            self._dirty(instance)
            changes = [(raw, instance.effective_room(raw)) for raw in raws]
            changes.sort(key=_present)  # the gone ones first, as in a whole reconcile
            return self._reconcile(instance, changes, whole=True)
        instance.clear_overlay()
        if joined:
            self._join_counter += 1
            instance.join(self._join_counter)
            self._joined[instance.id] = instance
            self._by_id = None
        elif previous is not None and previous.endpoint_url != snapshot.endpoint_url:
            instance.reset_rooms()
        self._track_name(instance, snapshot, previous.name if previous is not None else None)
        self._dirty(instance)
        return self._reconcile(instance, instance.full_changes(), joined=joined, whole=True)

    def touch(self, instance: Instance, now_ms: int) -> list[Event]:
        """A hash-only reply: newer ``lastSyncAt``; overlay, holds and overrides settle."""
        if not instance.touch(now_ms):
            return []
        self._clear_holds(instance)
        return self._settle_overlay(instance)

    def add_provisional(self, instance: Instance, raw: str, room_type: str) -> list[Event]:
        """List an acked create's room until a reply lists it; re-files the instance."""
        if not instance.joined or instance.removed:
            return []
        instance.overlay_create(raw, room_type)
        reported = instance.effective_room(raw)
        if reported is not None and raw not in instance.rooms:
            base = encode_public_id(raw)
            if base not in self._claims:  # the usual acked create: a new room, its id free
                room = instance.add_room(raw, base, reported)
                self._claims[base] = room
                room.public = base
                self._public[base] = room
                self._dirty(instance)
                self.index.refresh(instance)
                return [(EventType.ROOM_CREATE, room.room_info())]
        events = self._reconcile(instance, [(raw, reported)])
        self.index.refresh(instance)
        return events

    def hide(self, instance: Instance, raw: str) -> list[Event]:
        if not instance.joined or instance.removed:
            return []
        instance.overlay_destroy(raw)
        return self._reconcile(instance, [(raw, None)])

    def seats_changed(self, room: _Room) -> None:
        """A room's reserved seats moved: its views and the fleet hash are out of date."""
        room.reset()
        if not room.instance.removed and room.instance.joined:
            self._dirty(room.instance)

    def remove(self, instance: Instance) -> list[Event]:
        """Forget a connection; emits ``instance:leave`` first if it was in the read model."""
        if instance.removed:
            return []
        instance.mark_removed()
        self._instances.pop(instance.id, None)
        self._clear_holds(instance)
        if not instance.joined:
            return []
        leave = instance.info()
        del self._joined[instance.id]
        self._by_id = None
        self._forget_name(instance, leave.name)
        events: list[Event] = [(EventType.INSTANCE_LEAVE, leave)]
        events.extend(self._reconcile(instance, [(raw, None) for raw in list(instance.rooms)]))
        self.index.remove(instance)
        self._dirty(instance)
        instance.clear_overlay()
        instance.clear_override()
        return events

    # --- internals --------------------------------------------------------------

    def _forget_name(self, instance: Instance, name: str) -> None:
        holders = self._names.get(name)
        if holders is not None:
            holders.pop(instance.id, None)
            if not holders:
                del self._names[name]

    def _track_name(self, instance: Instance, snapshot: Snapshot, previous: str | None) -> None:
        """Keep the name index current; warn when a first snapshot shares a live name."""
        if previous == snapshot.name:
            return
        if previous is not None:
            self._forget_name(instance, previous)
        holders = self._names.setdefault(snapshot.name, {})
        if previous is None:
            other = next(
                (
                    h
                    for h in holders.values()
                    if h.snapshot is not None and h.snapshot.process_uid != snapshot.process_uid
                ),
                None,
            )
            if other is not None:
                log.warning(
                    "instance name shared name=%s instance=%s other=%s",
                    snapshot.name,
                    instance.id,
                    other.id,
                )
        holders[instance.id] = instance

    def _settle_overlay(self, instance: Instance) -> list[Event]:
        """Drop the overlay: its rooms fall back to what the applied snapshot says."""
        raws = instance.settle_overlay()
        if not raws:
            return []
        return self._reconcile(instance, [(raw, instance.effective_room(raw)) for raw in raws])

    def _dirty(self, instance: Instance) -> None:
        """``instance``'s views and the fleet's derived views are out of date."""
        instance.invalidate()
        if not instance.removed:
            self._unencoded.add(instance)
        self._stats = None
        self._state_hash = None
        self._version += 1
        self.sync_due = True

    def _reconcile(
        self,
        instance: Instance,
        changes: Iterable[Change],
        *,
        joined: bool = False,
        whole: bool = False,
    ) -> list[Event]:
        """Bring the listed rooms of ``instance`` to their effective state and re-resolve
        the public ids they touch; costs O(changes), not O(rooms on the instance)."""
        rooms = instance.apply_changes(changes)
        step = _Pass()
        if rooms.touched or whole:
            step.changed.add(instance)
        self._update_claims(rooms, step)
        renamed = self._publish_renames(self._resolve_bases(step.affected), rooms, step)
        for changed in step.changed:
            self._dirty(changed)
            if not changed.removed:
                self.index.refresh(changed)
        events = self._events(instance, rooms.created, renamed, step.destroyed, joined)
        if rooms.updated:
            events.extend(
                (EventType.ROOM_UPDATE, room.room_info())
                for room in rooms.updated
                if not room.instance.removed and room not in renamed and room.public
            )
        return events

    def _update_claims(self, rooms: RoomChanges, step: _Pass) -> None:
        """Withdraw the dropped rooms' claims (each published as destroyed) and file the
        new rooms'; every base id whose claims changed is re-resolved after."""
        affected = step.affected
        for room in rooms.dropped:
            step.destroyed.append(room.room_info())
            self._unclaim(room)
            affected.add(room.base)
        for room in rooms.created:
            self._claim(room)
            affected.add(room.base)
        for room in rooms.flipped:
            affected.add(room.base)

    def _publish_renames(
        self, before: dict[_Room, str], rooms: RoomChanges, step: _Pass
    ) -> list[_Room]:
        """Rooms whose public id moved: each is destroyed under its old id and created
        under the new one (a new room only created); returns the renamed ones."""
        renamed: list[_Room] = []
        for room, old_public in before.items():
            if room.public == old_public or room.instance.removed:
                continue
            step.changed.add(room.instance)
            if old_public and room not in rooms.created:
                last = rooms.flipped.get(room) or room.info or room.room_info()
                step.destroyed.append(replace(last, id=old_public))
                renamed.append(room)
            room.reset()
        return renamed

    def _events(
        self,
        instance: Instance,
        created: list[_Room],
        renamed: list[_Room],
        destroyed: list[RoomInfo],
        joined: bool,
    ) -> list[Event]:
        events: list[Event] = []
        if joined:
            events.append((EventType.INSTANCE_JOIN, instance.info()))
        creates = [room for room in created if not room.instance.removed] + renamed
        if len(creates) > 1:
            creates.sort(key=lambda r: (r.instance.join_seq or 0, r.raw))
        events.extend((EventType.ROOM_CREATE, room.room_info()) for room in creates)
        events.extend((EventType.ROOM_DESTROY, info) for info in destroyed)
        return events

    def take_sync(self) -> Event | None:
        """The ``sync`` event owed after reconciles, if ``stateHash`` moved since the last."""
        job = self.start_sync()
        job.advance()
        return self.finish_sync(job)

    def skip_sync(self) -> None:
        """Nobody listens for ``sync``: owe none, and let the next one go out whatever
        its hash (a new listener has seen none); reads still hash on demand."""
        self.sync_due = False
        self._unencoded.clear()
        self._emitted_hash = ""

    def encode_entries(self, budget_s: float) -> bool:
        """Re-encode changed instances' hash entries for up to ``budget_s`` seconds
        (ahead of :meth:`start_sync`); True when none is left."""
        unencoded = self._unencoded
        deadline = time.perf_counter() + budget_s
        while unencoded:
            instance = unencoded.pop()
            if not instance.removed:
                instance.hash_entry()
            if time.perf_counter() >= deadline:
                break
        return not unencoded

    def start_sync(self) -> SyncJob:
        """Capture the fleet for the owed ``sync``; hash it with :meth:`SyncJob.advance`."""
        self.sync_due = False
        self._unencoded.clear()
        if self._state_hash is not None:
            return SyncJob([], (0, 0, 0, ()), self._version, self.stats)
        entries = [i.hash_entry() for i in self._ordered()]
        return SyncJob(entries, self.counts(), self._version)

    def finish_sync(self, job: SyncJob) -> Event | None:
        """The ``sync`` event for a hashed capture, if its hash differs from the last."""
        stats = job.result()
        if job.version == self._version:
            self._state_hash = stats.state_hash
            self._stats = stats
        if stats.state_hash == self._emitted_hash:
            return None
        self._emitted_hash = stats.state_hash
        return (EventType.SYNC, stats)


def _present(change: tuple[str, object]) -> bool:
    return change[1] is not None
