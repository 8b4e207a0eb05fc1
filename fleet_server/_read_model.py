"""The in-memory read model of the fleet (SPEC §1, §2, §5, §7.2, §7.3).

One record per connected instance; an instance is *in the read model* from its first
applied snapshot. Each record's effective rooms are its last applied snapshot plus the
read-your-write overlay (acked creates added, acked destroys hidden). Public room ids
are resolved incrementally: every room claims the public form of its raw id, and when
several claim one, ``fleet`` beats ``local``, then the earlier joiner, then the lower
instance id; the others are namespaced ``<processUid>~<id>``.

Every mutation returns the events it causes, already ordered: ``instance:join`` and
the instance's new rooms, then ``room:destroy``; it also marks ``sync_due``, and the
owner collects the ``sync`` event with :meth:`ReadModel.take_sync`, so a burst of
reconciles hashes the fleet once. Derived views (instance infos, stats, state hash,
indexes) are cached and rebuilt only after a semantic change.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from fleet_agent import Capacity
from fleet_agent.wire import canonical_text

from ._ids import encode_public_id
from ._models import FleetStats, InstanceInfo, InstanceStatus, RoomInfo
from ._placement_index import PlacementIndex
from ._snapshot import ReportedRoom, Snapshot

__all__ = ["Event", "Instance", "ReadModel", "SyncJob"]

log = logging.getLogger("fleet.server")

EMPTY_HASH: Final = "4f53cda18c2baa0c"

Event = tuple[str, Any]


@dataclass(eq=False, slots=True)
class _Room:
    raw: str
    base: str
    public: str
    type: str
    connections: int
    local: bool
    instance: Instance
    reported: ReportedRoom  # what the three fields above were set from
    info: RoomInfo | None = None

    def reset(self) -> None:
        """Forget the derived views after the room or its instance's endpoint changed."""
        self.info = None

    def room_info(self) -> RoomInfo:
        info = self.info
        if info is None:
            snapshot = self.instance.snapshot
            assert snapshot is not None
            info = RoomInfo(
                self.public,
                self.type,
                self.connections,
                self.instance.id,
                snapshot.endpoint_url,
                self.local,
            )
            self.info = info
        return info


class Instance:
    """One connected agent as the orchestrator tracks it (mutated on the loop only)."""

    __slots__ = (
        "_connections",
        "_hash_entry",
        "_info",
        "hidden",
        "holds",
        "id",
        "inflight",
        "join_seq",
        "last_seq",
        "last_sync_at",
        "override",
        "provisional",
        "removed",
        "rooms",
        "snapshot",
        "stale",
    )

    def __init__(self, instance_id: str) -> None:
        self.id = instance_id
        self.join_seq: int | None = None
        self.snapshot: Snapshot | None = None
        self.last_seq = 0
        self.last_sync_at = 0
        self.provisional: dict[str, str] = {}
        self.hidden: set[str] = set()
        self.holds: set[str] = set()
        self.inflight = 0
        self.override: str | None = None
        self.stale = False
        self.removed = False
        self.rooms: dict[str, _Room] = {}
        self._info: InstanceInfo | None = None
        self._hash_entry: bytes | None = None
        self._connections: int | None = None

    @property
    def joined(self) -> bool:
        return self.snapshot is not None

    @property
    def effective_status(self) -> str:
        if self.override is not None:
            return self.override
        return self.snapshot.status if self.snapshot is not None else "active"

    @property
    def status(self) -> str:
        return self.snapshot.status if self.snapshot is not None else "active"

    @property
    def room_load(self) -> int:
        """Rooms counted toward ``maxRooms``: listed, in flight and held."""
        return len(self.rooms) + self.inflight + len(self.holds)

    @property
    def connections(self) -> int:
        total = self._connections
        if total is None:
            total = sum(room.connections for room in self.rooms.values())
            self._connections = total
        return total

    def info(self) -> InstanceInfo:
        info = self._info
        if info is None:
            snap = self.snapshot
            assert snap is not None
            rooms = tuple(self.rooms[raw].room_info() for raw in sorted(self.rooms))
            status: InstanceStatus = "draining" if snap.status == "draining" else "active"
            info = InstanceInfo(
                id=self.id,
                name=snap.name,
                process_uid=snap.process_uid,
                endpoint_url=snap.endpoint_url,
                labels=snap.labels,
                room_types=snap.room_types,
                rooms=rooms,
                connections=self.connections,
                capacity=Capacity(snap.max_connections, snap.max_rooms),
                auto_create=snap.auto_create,
                status=status,
                last_sync_at=self.last_sync_at,
                agent_version=snap.agent_version,
                protocol_version=snap.protocol_version,
            )
            self._info = info
        elif info.last_sync_at != self.last_sync_at:
            info = replace(info, last_sync_at=self.last_sync_at)
            self._info = info
        return info

    def hash_entry(self) -> bytes:
        """This instance's canonical stateHash entry (``lastSyncAt`` excluded), UTF-8.

        Equal to the canonical JSON of ``info().to_dict()`` without ``lastSyncAt``; the
        rooms are written from a template (their keys sorted), about 1 µs per room.
        """
        entry_bytes = self._hash_entry
        if entry_bytes is None:
            snap = self.snapshot
            assert snap is not None
            entry = {
                "id": self.id,
                "name": snap.name,
                "processUid": snap.process_uid,
                "endpointUrl": snap.endpoint_url,
                "labels": dict(snap.labels),
                "roomTypes": snap.room_types,
                "rooms": (),
                "connections": self.connections,
                "capacity": {"maxConnections": snap.max_connections, "maxRooms": snap.max_rooms},
                "autoCreate": snap.auto_create,
                "status": "draining" if snap.status == "draining" else "active",
                "agentVersion": snap.agent_version,
                "protocolVersion": snap.protocol_version,
            }
            rooms = self.rooms
            head = '{"connections":'
            tail = f',"endpointUrl":{_json_string(snap.endpoint_url)},"id":' if rooms else ""
            owner = f',"instanceId":{_json_string(self.id)},"local":'
            fragments = ",".join(
                [
                    f"{head}{room.connections}{tail}{_json_string(room.public)}{owner}"
                    f'{"true" if room.local else "false"},"type":{_json_string(room.type)}}}'
                    for room in [rooms[raw] for raw in sorted(rooms)]
                ]
            )
            # Every other value is a string, number, bool, null, a list of strings or an
            # object of strings, so this key is the only place the text can occur.
            text = canonical_text(entry).replace(_EMPTY_ROOMS, f'"rooms":[{fragments}]', 1)
            entry_bytes = text.encode()
            self._hash_entry = entry_bytes
        return entry_bytes


_EMPTY_ROOMS: Final = '"rooms":[]'
_NEEDS_ESCAPE: Final = re.compile(r'["\\\x00-\x1f]')


def _json_string(text: str) -> str:
    """``text`` as canonical JSON (``"…"``), escaping only where the encoder would."""
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return canonical_text(text)


Change = tuple[str, ReportedRoom | None]  # raw room id -> its effective state, None: gone


def _fleet_digest(entries: list[bytes]) -> str:
    """``hash64`` of ``[entry,entry,…]`` fed piecewise: no joined copy of the fleet's text."""
    job = SyncJob(entries, (0, 0, 0, ()), 0)
    job.advance()
    return job.hexdigest()


class SyncJob:
    """The fleet hash of one captured instant, fed to SHA-256 a slice at a time so a
    large fleet's hash never holds the event loop for long (entries are immutable)."""

    __slots__ = ("_digest", "_entries", "_position", "counts", "stats", "version")

    def __init__(
        self,
        entries: list[bytes],
        counts: tuple[int, int, int, tuple[str, ...]],
        version: int,
        stats: FleetStats | None = None,
    ) -> None:
        self._entries = entries
        self._position = 0
        self._digest = hashlib.sha256(b"[")
        self.counts = counts
        self.version = version
        self.stats = stats  # already known: nothing to hash

    def advance(self, budget_bytes: int | None = None) -> bool:
        """Hash up to ``budget_bytes`` more (all when None); True once every entry is in."""
        if self.stats is not None:
            return True
        entries, position = self._entries, self._position
        update = self._digest.update
        fed = 0
        while position < len(entries):
            if position:
                update(b",")
            entry = entries[position]
            update(entry)
            position += 1
            fed += len(entry)
            if budget_bytes is not None and fed >= budget_bytes:
                break
        self._position = position
        return position >= len(entries)

    def hexdigest(self) -> str:
        """The fleet hash, once :meth:`advance` has fed every entry."""
        self._digest.update(b"]")
        return self._digest.hexdigest()[:16]

    def result(self) -> FleetStats:
        if self.stats is None:
            instances, rooms, connections, types = self.counts
            self.stats = FleetStats(instances, rooms, connections, types, self.hexdigest())
        return self.stats


def _effective_room(instance: Instance, raw: str) -> ReportedRoom | None:
    if raw in instance.hidden:
        return None
    snapshot = instance.snapshot
    assert snapshot is not None
    reported = snapshot.rooms.get(raw)
    if reported is not None:
        return reported
    room_type = instance.provisional.get(raw)
    return ReportedRoom(room_type, 0, False) if room_type is not None else None


def _full_changes(instance: Instance) -> list[Change]:
    """Every room of ``instance``: the gone ones first, then its whole effective state."""
    snapshot = instance.snapshot
    assert snapshot is not None
    target: Mapping[str, ReportedRoom] = snapshot.rooms
    if instance.hidden or instance.provisional:
        target = dict(target)
        for raw in instance.hidden:
            target.pop(raw, None)
        for raw, room_type in instance.provisional.items():
            if raw not in target:
                target[raw] = ReportedRoom(room_type, 0, False)
    changes: list[Change] = [(raw, None) for raw in instance.rooms if raw not in target]
    changes.extend(target.items())
    return changes


def _same_content(previous: Snapshot, snapshot: Snapshot) -> bool:
    """Whether two snapshots of one instance differ in nothing but ``seq`` and ``hash``."""
    return (
        previous.rooms == snapshot.rooms
        and previous.status == snapshot.status
        and previous.labels == snapshot.labels
        and previous.endpoint_url == snapshot.endpoint_url
        and previous.name == snapshot.name
        and previous.max_connections == snapshot.max_connections
        and previous.max_rooms == snapshot.max_rooms
        and previous.room_types == snapshot.room_types
        and previous.auto_create == snapshot.auto_create
        and previous.process_uid == snapshot.process_uid
        and previous.agent_version == snapshot.agent_version
        and previous.protocol_version == snapshot.protocol_version
    )


class ReadModel:
    """All fleet state; every method runs on the orchestrator's event loop."""

    def __init__(self) -> None:
        self._instances: dict[str, Instance] = {}  # every live connection
        self._joined: dict[str, Instance] = {}  # in the read model, join order
        self._join_counter = 0
        # base public id -> its claimant, or a list when several claim it (rare: a list
        # per room would cost ~80 B each)
        self._claims: dict[str, _Room | list[_Room]] = {}
        self._public: dict[str, _Room] = {}
        self._warned_collisions: set[tuple[str, str, str]] = set()
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
        instance.holds.add(raw)
        self._held[raw] = instance
        self.index.refresh(instance)

    def _clear_holds(self, instance: Instance) -> None:
        if not instance.holds:
            return
        for raw in instance.holds:
            if self._held.get(raw) is instance:
                del self._held[raw]
        instance.holds.clear()
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
            instances, rooms, connections, types = self._counts()
            stats = FleetStats(instances, rooms, connections, types, self.state_hash)
            self._stats = stats
        return stats

    def _counts(self) -> tuple[int, int, int, tuple[str, ...]]:
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
            digest = _fleet_digest([i.hash_entry() for i in self._ordered()])
            self._state_hash = digest
        return digest

    # --- mutations --------------------------------------------------------------

    def apply_snapshot(self, instance: Instance, snapshot: Snapshot, now_ms: int) -> list[Event]:
        """Apply a validated full reply; the overlay and holds are dropped.

        A reply whose content equals the applied snapshot (the forced full replies of a
        quiet instance) only settles the overlay: nothing is re-derived or re-hashed.
        """
        joined = instance.snapshot is None
        previous = instance.snapshot
        instance.snapshot = snapshot
        instance.last_seq = snapshot.seq
        instance.last_sync_at = now_ms
        self._clear_holds(instance)
        if instance.override == snapshot.status:
            instance.override = None
        if previous is not None and _same_content(previous, snapshot):
            return self._settle_overlay(instance)
        instance.provisional.clear()
        instance.hidden.clear()
        if joined:
            self._join_counter += 1
            instance.join_seq = self._join_counter
            self._joined[instance.id] = instance
            self._by_id = None
        elif previous is not None and previous.endpoint_url != snapshot.endpoint_url:
            for room in instance.rooms.values():
                room.reset()
        self._track_name(instance, snapshot, previous.name if previous is not None else None)
        self._dirty(instance)
        return self._reconcile(instance, _full_changes(instance), joined=joined, whole=True)

    def touch(self, instance: Instance, now_ms: int) -> list[Event]:
        """A hash-only reply: newer ``lastSyncAt``; overlay, holds and overrides settle."""
        instance.last_sync_at = now_ms
        self._clear_holds(instance)
        if instance.override is not None and instance.override == instance.status:
            instance.override = None
        return self._settle_overlay(instance)

    def add_provisional(self, instance: Instance, raw: str, room_type: str) -> list[Event]:
        if not instance.joined or instance.removed:
            return []
        instance.hidden.discard(raw)
        instance.provisional[raw] = room_type
        return self._reconcile(instance, [(raw, _effective_room(instance, raw))])

    def hide(self, instance: Instance, raw: str) -> list[Event]:
        if not instance.joined or instance.removed:
            return []
        instance.provisional.pop(raw, None)
        instance.hidden.add(raw)
        return self._reconcile(instance, [(raw, None)])

    def remove(self, instance: Instance) -> list[Event]:
        """Forget a connection; emits ``instance:leave`` first if it was in the read model."""
        if instance.removed:
            return []
        instance.removed = True
        self._instances.pop(instance.id, None)
        self._clear_holds(instance)
        if not instance.joined:
            return []
        leave = instance.info()
        del self._joined[instance.id]
        self._by_id = None
        self._forget_name(instance, leave.name)
        events: list[Event] = [("instance:leave", leave)]
        events.extend(self._reconcile(instance, [(raw, None) for raw in list(instance.rooms)]))
        self.index.remove(instance)
        self._dirty(instance)
        instance.provisional.clear()
        instance.hidden.clear()
        instance.override = None
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
        if not instance.provisional and not instance.hidden:
            return []
        raws = [*instance.provisional, *instance.hidden]
        instance.provisional.clear()
        instance.hidden.clear()
        return self._reconcile(instance, [(raw, _effective_room(instance, raw)) for raw in raws])

    def _dirty(self, instance: Instance) -> None:
        """``instance``'s views and the fleet's derived views are out of date."""
        instance._info = None
        instance._hash_entry = None
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
        current = instance.rooms
        affected: set[str] = set()
        changed: set[Instance] = set()
        before: dict[_Room, str] = {}
        old_info: dict[_Room, RoomInfo] = {}  # as last published, for renamed rooms
        destroyed: list[RoomInfo] = []
        created: list[_Room] = []
        connections = 0

        for raw, reported in changes:
            existing = current.get(raw)
            if existing is not None and existing.reported == reported:
                continue
            if reported is None:
                if existing is None:
                    continue
                del current[raw]
                connections -= existing.connections
                destroyed.append(existing.room_info())
                self._unclaim(existing)
                if self._public.get(existing.public) is existing:
                    del self._public[existing.public]
                affected.add(existing.base)
            elif existing is None:
                base = encode_public_id(raw)
                room = _Room(
                    raw,
                    base,
                    "",
                    reported.type,
                    reported.connections,
                    reported.local,
                    instance,
                    reported,
                )
                current[raw] = room
                connections += reported.connections
                self._claim(room)
                affected.add(base)
                created.append(room)
            else:
                existing.reported = reported
                if existing.local != reported.local:
                    affected.add(existing.base)
                    old_info[existing] = existing.room_info()
                connections += reported.connections - existing.connections
                existing.type = reported.type
                existing.connections = reported.connections
                existing.local = reported.local
                existing.reset()
            changed.add(instance)

        if instance._connections is not None:
            instance._connections += connections

        for base in affected:
            claimed = self._claims.get(base)
            if claimed is None:
                continue
            if isinstance(claimed, _Room):
                before.setdefault(claimed, claimed.public)
                self._resolve(base, [claimed])
                continue
            for room in claimed:
                before.setdefault(room, room.public)
            self._resolve(base, claimed)

        renamed_created: list[_Room] = []
        for room, old_public in before.items():
            if room.public == old_public or room.instance.removed:
                continue
            changed.add(room.instance)
            if old_public and room not in created:
                last = old_info.get(room) or room.info or room.room_info()
                destroyed.append(replace(last, id=old_public))
                renamed_created.append(room)
            room.reset()

        if whole:
            changed.add(instance)
        for inst in changed:
            self._dirty(inst)
            if not inst.removed:
                self.index.refresh(inst)

        events: list[Event] = []
        if joined:
            events.append(("instance:join", instance.info()))
        creates = [room for room in created if not room.instance.removed] + renamed_created
        creates.sort(key=lambda r: (r.instance.join_seq or 0, r.raw))
        events.extend(("room:create", room.room_info()) for room in creates)
        events.extend(("room:destroy", info) for info in destroyed)
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
        return SyncJob(entries, self._counts(), self._version)

    def finish_sync(self, job: SyncJob) -> Event | None:
        """The ``sync`` event for a hashed capture, if its hash differs from the last."""
        stats = job.result()
        if job.version == self._version:
            self._state_hash = stats.state_hash
            self._stats = stats
        if stats.state_hash == self._emitted_hash:
            return None
        self._emitted_hash = stats.state_hash
        return ("sync", stats)

    def _claim(self, room: _Room) -> None:
        held = self._claims.get(room.base)
        if held is None:
            self._claims[room.base] = room
        elif isinstance(held, _Room):
            self._claims[room.base] = [held, room]
        else:
            held.append(room)

    def _unclaim(self, room: _Room) -> None:
        held = self._claims[room.base]
        if held is room:
            del self._claims[room.base]
            return
        assert isinstance(held, list)
        held.remove(room)
        if len(held) == 1:
            self._claims[room.base] = held[0]

    def _resolve(self, base: str, claimants: list[_Room]) -> None:
        claimants.sort(key=lambda r: (r.local, r.instance.join_seq or 0, r.instance.id))
        for index, room in enumerate(claimants):
            if index == 0:
                public = base
            else:
                snapshot = room.instance.snapshot
                process_uid = snapshot.process_uid if snapshot is not None else room.instance.id
                public = f"{process_uid}~{base}"
                suffix = 2
                while public in self._public and self._public[public] is not room:
                    public = f"{process_uid}~{base}~{suffix}"
                    suffix += 1
            if room.public != public:
                if room.public and self._public.get(room.public) is room:
                    del self._public[room.public]
                room.public = public
                self._public[public] = room
            else:
                self._public[public] = room
        keeper = claimants[0]
        if not keeper.local:
            for loser in claimants[1:]:
                if loser.local:
                    continue
                key = (keeper.instance.id, loser.instance.id, base)
                if key not in self._warned_collisions:
                    self._warned_collisions.add(key)
                    log.warning(
                        "duplicate fleet room id keeper=%s loser=%s namespaced=%s",
                        keeper.instance.id,
                        loser.instance.id,
                        loser.public,
                    )
