"""One connected agent as the orchestrator tracks it, and its rooms (SPEC §1, §7.2).

An :class:`Instance` changes only through its own O(1) methods: the applied snapshot,
the overlay (acked creates added, acked destroys hidden), the placement bookkeeping
(creates in flight, timeout holds, override, stale mark) and its effective rooms, which
the read model reconciles. Its views (``info``, ``hash_entry``) are cached until the
read model invalidates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from typing import Final

from ._fields import compile_function
from ._fleet_hash import encode_entry
from ._ids import encode_public_id
from ._models import InstanceInfo, InstanceStatus, RoomInfo, build_instance_info, build_room_info
from ._snapshot import ReportedRoom, Snapshot

__all__ = ["Change", "Instance", "RoomChanges", "hosts"]

Change = tuple[str, ReportedRoom | None]  # raw room id -> its effective state, None: gone


_REPORTED: Final = ReportedRoom._fields
_copy_reported: Final[Callable[[_Room, ReportedRoom], None]] = compile_function(
    "copy_reported",
    "def copy_reported(room, reported):\n"
    f"    {''.join(f'room.{name}, ' for name in _REPORTED)}= reported\n",
    {},
    module=__name__,
    qualname="_Room.copy_reported",
)


def _acked(room_type: str) -> ReportedRoom:
    """An acked create that no reply has listed yet."""
    return ReportedRoom(room_type, 0, False)


def _instance_status(snapshot: Snapshot) -> InstanceStatus:
    return "draining" if snapshot.status == "draining" else "active"


class _Room:
    """One effective room: its agent-reported state and its public id (SPEC §7.3).

    Each value of the reported room is also kept in a slot of its own, named like the
    :class:`ReportedRoom` field: the stateHash entry reads them room after room, and a
    slot is much cheaper to reach there than the tuple's items.
    """

    __slots__ = ("base", "info", "instance", "public", "raw", "reported", "reserved", *_REPORTED)

    type: str  # the reported values (slots named by ReportedRoom's fields)
    connections: int
    local: bool
    metadata: str
    max_connections: int | None
    locked: bool

    def __init__(self, raw: str, base: str, instance: Instance, reported: ReportedRoom) -> None:
        self.raw = raw
        self.base = base  # the public form of ``raw``, which it claims
        self.public = ""  # until resolved
        self.instance = instance
        self.reported = reported
        self.reserved = 0  # seats held by live reservations (the seat ledger sets it)
        self.info: RoomInfo | None = None
        _copy_reported(self, reported)

    def reset(self) -> None:
        """Forget the derived views after the room or its instance's endpoint changed."""
        self.info = None

    def room_info(self) -> RoomInfo:
        info = self.info
        if info is None:
            # A room is part of its instance's record: it reads the instance's slots.
            instance = self.instance
            snapshot = instance.snapshot
            assert snapshot is not None
            info = build_room_info(
                self, self.public, instance.id, snapshot.endpoint_url, self.reserved
            )
            self.info = info
        return info


class RoomChanges:
    """What :meth:`Instance.apply_changes` did to the rooms, for the read model."""

    __slots__ = ("created", "dropped", "flipped", "touched", "updated")

    def __init__(self) -> None:
        self.created: list[_Room] = []
        self.dropped: list[_Room] = []
        self.flipped: dict[_Room, RoomInfo] = {}  # ``local`` changed: its info before
        self.updated: list[_Room] = []  # metadata, locked or max_connections changed
        self.touched = False  # any room changed


class Instance:
    """One connected agent as the orchestrator tracks it (mutated on the loop only)."""

    __slots__ = (
        "_connections",
        "_hash_entry",
        "_hidden",
        "_holds",
        "_inflight",
        "_info",
        "_last_seq",
        "_last_sync_at",
        "_override",
        "_provisional",
        "_rooms",
        "_stale",
        "id",
        "join_seq",
        "removed",
        "snapshot",
    )

    def __init__(self, instance_id: str) -> None:
        self.id: Final = instance_id
        # Read by placement on every create, so plain attributes: set only by the methods.
        self.join_seq: int | None = None  # the place in join order, from the first snapshot
        self.snapshot: Snapshot | None = None
        self._last_seq = 0
        self._last_sync_at = 0
        self._provisional: dict[str, str] = {}  # acked creates: raw id -> room type
        self._hidden: set[str] = set()  # acked destroys
        self._holds: set[str] = set()  # creates that timed out
        self._inflight = 0
        self._override: str | None = None
        self._stale = False
        self.removed = False
        self._rooms: dict[str, _Room] = {}
        self._info: InstanceInfo | None = None
        self._hash_entry: bytes | None = None
        self._connections: int | None = None

    # --- reads --------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def holds(self) -> AbstractSet[str]:
        return self._holds

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def stale(self) -> bool:
        return self._stale

    @property
    def rooms(self) -> Mapping[str, _Room]:
        """The effective rooms by raw id."""
        return self._rooms

    @property
    def joined(self) -> bool:
        return self.snapshot is not None

    @property
    def effective_status(self) -> str:
        if self._override is not None:
            return self._override
        return self.snapshot.status if self.snapshot is not None else "active"

    @property
    def status(self) -> str:
        return self.snapshot.status if self.snapshot is not None else "active"

    @property
    def room_load(self) -> int:
        """Rooms counted toward ``maxRooms``: listed, in flight and held."""
        return len(self._rooms) + self._inflight + len(self._holds)

    @property
    def connections(self) -> int:
        total = self._connections
        if total is None:
            total = sum(room.connections for room in self._rooms.values())
            self._connections = total
        return total

    def effective_room(self, raw: str) -> ReportedRoom | None:
        """What the applied snapshot and the overlay say of room ``raw``."""
        if raw in self._hidden:
            return None
        snapshot = self.snapshot
        assert snapshot is not None
        reported = snapshot.rooms.get(raw)
        if reported is not None:
            return reported
        room_type = self._provisional.get(raw)
        return _acked(room_type) if room_type is not None else None

    def full_changes(self) -> list[Change]:
        """Every room: the gone ones first, then the whole effective state."""
        snapshot = self.snapshot
        assert snapshot is not None
        target: Mapping[str, ReportedRoom] = snapshot.rooms
        if self._hidden or self._provisional:
            target = dict(target)
            for raw in self._hidden:
                target.pop(raw, None)
            for raw, room_type in self._provisional.items():
                if raw not in target:
                    target[raw] = _acked(room_type)
        changes: list[Change] = [(raw, None) for raw in self._rooms if raw not in target]
        changes.extend(target.items())
        return changes

    # --- views --------------------------------------------------------------------

    def room_infos(self) -> tuple[RoomInfo, ...]:
        """The rooms' views: the same tuple until the rooms change (a poll that only
        moves ``lastSyncAt`` keeps it), so a reader can cache what it derives from it."""
        info = self._info
        return info.rooms if info is not None else self.info().rooms

    def acked_room_info(self, raw: str, room_type: str) -> RoomInfo:
        """An acked create as a room of this instance, listed or not (once it has left)."""
        room = self._rooms.get(raw)
        if room is not None:
            return room.room_info()
        endpoint = self.snapshot.endpoint_url if self.snapshot is not None else ""
        return build_room_info(_acked(room_type), raw, self.id, endpoint, 0)

    def _applied(self) -> tuple[Snapshot, list[_Room]]:
        """The applied snapshot and the rooms in id order (views need both)."""
        snap, rooms = self.snapshot, self._rooms
        assert snap is not None
        return snap, [rooms[raw] for raw in sorted(rooms)]

    def info(self) -> InstanceInfo:
        info = self._info
        if info is None:
            snap, rooms = self._applied()
            rooms_info = tuple(room.room_info() for room in rooms)
            status = _instance_status(snap)
            info = build_instance_info(
                snap, self.id, rooms_info, self.connections, status, self._last_sync_at
            )
            self._info = info
        elif info.last_sync_at != self._last_sync_at:
            info = replace(info, last_sync_at=self._last_sync_at)
            self._info = info
        return info

    def hash_entry(self) -> bytes:
        """The canonical stateHash entry (UTF-8): ``info().to_dict()`` less unhashed fields."""
        entry = self._hash_entry
        if entry is None:
            snap, rooms = self._applied()
            entry = encode_entry(
                snap,
                rooms,
                id=self.id,
                connections=self.connections,
                status=_instance_status(snap),
                room_instance_id=self.id,
                room_endpoint_url=snap.endpoint_url,
            ).encode()
            self._hash_entry = entry
        return entry

    def invalidate(self) -> None:
        """Forget the views after a semantic change."""
        self._info = None
        self._hash_entry = None

    # --- agent replies ------------------------------------------------------------

    def apply(self, snapshot: Snapshot, now_ms: int) -> Snapshot | None:
        """Take a validated full reply (an override it agrees with settles); returns the old."""
        previous = self.snapshot
        self.snapshot = snapshot
        self._last_seq = snapshot.seq
        self._last_sync_at = now_ms
        if self._override == snapshot.status:
            self._override = None
        return previous

    def touch(self, now_ms: int) -> bool:
        """A hash-only reply: a newer ``lastSyncAt``; an agreed override is settled.
        Returns whether holds or an overlay are left for the read model to drop."""
        self._last_sync_at = now_ms
        if self._override is not None and self._override == self.status:
            self._override = None
        return bool(self._holds or self._provisional or self._hidden)

    def join(self, join_seq: int) -> None:
        self.join_seq = join_seq

    # --- the overlay (SPEC §7.2) --------------------------------------------------

    def provisional(self, raw: str) -> bool:
        """Whether room ``raw`` is known from an ack only: no snapshot has listed it yet,
        so its seats (``max_connections``) are not known."""
        return raw in self._provisional

    def overlay_create(self, raw: str, room_type: str) -> None:
        self._hidden.discard(raw)
        self._provisional[raw] = room_type

    def overlay_destroy(self, raw: str) -> None:
        self._provisional.pop(raw, None)
        self._hidden.add(raw)

    def settle_overlay(self) -> list[str]:
        """Drop the overlay; returns the raw ids it touched."""
        if not self._provisional and not self._hidden:
            return []
        raws = [*self._provisional, *self._hidden]
        self.clear_overlay()
        return raws

    def clear_overlay(self) -> None:
        self._provisional.clear()
        self._hidden.clear()

    # --- effective rooms (the read model's reconcile) -----------------------------

    def apply_changes(self, changes: Iterable[Change]) -> RoomChanges:
        """Bring the listed rooms to their effective state; unchanged ones are skipped.
        Costs O(changes), not O(rooms on the instance)."""
        out = RoomChanges()
        rooms = self._rooms
        delta = 0
        for raw, reported in changes:
            existing = rooms.get(raw)
            if existing is not None and existing.reported == reported:
                continue
            if reported is None:
                if existing is None:
                    continue
                del rooms[raw]
                delta -= existing.connections
                out.dropped.append(existing)
            elif existing is None:
                out.created.append(self.add_room(raw, encode_public_id(raw), reported))
            else:
                if existing.local != reported.local:
                    out.flipped[existing] = existing.room_info()
                if (
                    existing.metadata != reported.metadata
                    or existing.locked != reported.locked
                    or existing.max_connections != reported.max_connections
                ):
                    out.updated.append(existing)
                delta += reported.connections - existing.connections
                existing.reported = reported
                existing.info = None
                _copy_reported(existing, reported)
            out.touched = True
        if self._connections is not None:
            self._connections += delta
        return out

    def add_room(self, raw: str, base: str, reported: ReportedRoom) -> _Room:
        """List a room not listed yet (what ``apply_changes`` does for a new one)."""
        room = self._rooms[raw] = _Room(raw, base, self, reported)
        if self._connections is not None:
            self._connections += room.connections
        return room

    def reset_rooms(self) -> None:
        """Forget every room's views (the endpoint they copy changed)."""
        for room in self._rooms.values():
            room.reset()

    # --- placement bookkeeping ----------------------------------------------------

    def create_started(self) -> None:
        """A create was sent here: one more ``maxRooms`` slot in use until it settles."""
        self._inflight += 1

    def create_settled(self) -> None:
        self._inflight -= 1

    def hold(self, raw: str) -> None:
        """Keep a timed-out create's slot until the next reply."""
        self._holds.add(raw)

    def release_holds(self) -> AbstractSet[str]:
        """Drop every hold; returns the raw ids that were held."""
        holds, self._holds = self._holds, set()
        return holds

    def override_status(self, status: str) -> None:
        """An acked drain or undrain: placement uses ``status`` until a reply agrees."""
        self._override = status

    def clear_override(self) -> None:
        self._override = None

    def mark_stale(self) -> None:
        self._stale = True

    def mark_fresh(self) -> None:
        self._stale = False

    def mark_removed(self) -> None:
        self.removed = True


_full_changes = Instance.full_changes  # a whole instance's reconcile, as a function


def hosts(room_type: str, labels: Mapping[str, str], instance: Instance) -> bool:
    """Whether placement may put a ``room_type`` room on ``instance`` (SPEC §6): joined,
    not stale, ``autoCreate``, active, of the type, with ``labels``, with headroom."""
    snapshot = instance.snapshot
    if snapshot is None or instance._stale or not snapshot.auto_create:
        return False
    status = instance._override if instance._override is not None else snapshot.status
    if status != "active" or room_type not in snapshot.room_types:
        return False
    own = snapshot.labels
    for key, value in labels.items():
        if own.get(key) != value:
            return False
    if snapshot.max_rooms is not None and snapshot.max_rooms <= instance.room_load:
        return False
    limit = snapshot.max_connections
    return limit is None or instance.connections < limit
