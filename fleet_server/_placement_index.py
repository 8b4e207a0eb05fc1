"""Per-room-type placement indexes, so a placement does not scan the fleet (SPEC §6.2).

For each room type the instances that may host it (joined, ``autoCreate``, the type in
``roomTypes``) are kept sorted by ``(load, rooms, join order)``, where load and rooms
are raw counts or ratios to ``maxConnections`` / ``maxRooms`` exactly as §6.2 scores
them. A type's members all declaring a limit, or all not declaring it, fixes the
scoring; a mixed type is answered by the plain scan, which decides per candidate set.

Least-loaded walks from the front, most-loaded from the back, skipping instances that
fail the per-request checks (stale, draining, labels, headroom); equal scores form one
contiguous run in join order, from which the RNG draws one of the fitting members,
each equally likely (see :data:`_EXACT_TIES`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from ._sorted import SortedChunks

if TYPE_CHECKING:
    from ._instance import Instance
    from ._snapshot import Snapshot

__all__ = ["PlacementIndex"]

# Runs up to this long are drawn exactly as ``rng.choice`` draws from their fitting
# members, each member checked; a longer run is drawn by rejection: a uniform position,
# kept if it fits (uniform over the fitting members too, one check when all fit), and
# after _SAMPLES misses exactly as a short run.
_EXACT_TIES: Final = 8
_SAMPLES: Final = 64

Entry = tuple[float, float, int, str]
# connections, rooms (listed, in flight, held), join order, id, maxConnections, maxRooms
Load = tuple[int, int, int, str, int | None, int | None]


def _load(instance: Instance, snapshot: Snapshot | None = None) -> Load:
    """What an instance's entries are scored from, read once per re-filing."""
    if snapshot is None:
        snapshot = instance.snapshot
    join_seq = instance.join_seq
    assert snapshot is not None and join_seq is not None
    return (
        instance.connections,
        instance.room_load,
        join_seq,
        instance.id,
        snapshot.max_connections,
        snapshot.max_rooms,
    )


def _ratio(value: int, limit: int | None) -> float:
    if not limit:
        return math.inf
    return value / limit


class _TypeIndex:
    __slots__ = ("entries", "members", "no_max_connections", "no_max_rooms", "ratio_modes")

    def __init__(self) -> None:
        self.members: dict[str, Instance] = {}
        self.no_max_connections = 0
        self.no_max_rooms = 0
        self.entries: SortedChunks[Entry] = SortedChunks()
        self.ratio_modes: tuple[bool, bool] | None = (False, False)

    def modes(self) -> tuple[bool, bool] | None:
        """(connections as ratio, rooms as ratio), or None when the type is mixed."""
        n = len(self.members)
        conn = self.no_max_connections
        rooms = self.no_max_rooms
        if 0 < conn < n or 0 < rooms < n:
            return None
        return (conn == 0 and n > 0, rooms == 0 and n > 0)

    def key(self, load: Load) -> Entry:
        connections, room_load, join_seq, instance_id, max_connections, max_rooms = load
        conn_ratio, rooms_ratio = self.ratio_modes or (False, False)
        score: float = _ratio(connections, max_connections) if conn_ratio else connections
        rooms: float = _ratio(room_load, max_rooms) if rooms_ratio else room_load
        return (score, rooms, join_seq, instance_id)

    def rebuild(self) -> None:
        self.ratio_modes = self.modes()
        if self.ratio_modes is None:
            self.entries = SortedChunks()
            return
        self.entries = SortedChunks(self.key(_load(i)) for i in self.members.values())


class PlacementIndex:
    """Keeps every type's candidates ordered; callers ``refresh`` after load changes."""

    def __init__(self) -> None:
        self._types: dict[str, _TypeIndex] = {}
        self._keys: dict[str, dict[str, Entry]] = {}  # instance id -> type -> entry
        self._capacity: dict[str, tuple[bool, bool]] = {}  # instance id -> (no conn, no rooms)
        # What each filed instance was last filed from: its snapshot and its load. The
        # same snapshot object and an equal load file it exactly as it is (an acked
        # create: one room more and one in flight less).
        self._filed: dict[str, tuple[Snapshot, Load]] = {}

    def refresh(self, instance: Instance) -> None:
        """Re-file ``instance`` after its snapshot, rooms, in-flight count or holds changed."""
        instance_id = instance.id
        snapshot = instance.snapshot
        load: Load | None = None
        if snapshot is not None and not instance.removed and instance.join_seq is not None:
            load = _load(instance, snapshot)
            filed = self._filed.get(instance_id)
            if filed is not None and filed[0] is snapshot:  # types and capacity as filed
                if filed[1] != load:
                    self._move(instance_id, load)
                    self._filed[instance_id] = (snapshot, load)
                return
        self._filed.pop(instance_id, None)
        self._refile(instance, snapshot, load)
        if load is not None and snapshot is not None and instance_id in self._keys:
            self._filed[instance_id] = (snapshot, load)

    def _move(self, instance_id: str, load: Load) -> None:
        """Re-key a filed instance whose load alone changed (a create started, ended)."""
        keys = self._keys[instance_id]
        for room_type, current in keys.items():
            index = self._types[room_type]
            entry = index.key(load)
            if entry == current:
                continue
            index.entries.remove(current)
            index.entries.add(entry)
            keys[room_type] = entry

    def _refile(self, instance: Instance, snapshot: Snapshot | None, load: Load | None) -> None:
        instance_id = instance.id
        wanted: Iterable[str] = ()
        if snapshot is not None and snapshot.auto_create and not instance.removed:
            wanted = snapshot.room_types
        old = self._keys.get(instance_id, {})
        new_types = set(wanted)
        for room_type in [t for t in old if t not in new_types]:
            self._leave(instance, room_type)
        if not new_types:
            self._keys.pop(instance_id, None)
            self._capacity.pop(instance_id, None)
            return
        assert snapshot is not None
        capacity = (snapshot.max_connections is None, snapshot.max_rooms is None)
        previous_capacity = self._capacity.get(instance_id)
        if previous_capacity is not None and previous_capacity != capacity:
            for room_type in list(self._keys.get(instance_id, {})):
                self._leave(instance, room_type)
        self._capacity[instance_id] = capacity
        keys = self._keys.setdefault(instance_id, {})
        for room_type in new_types:
            index = self._types.get(room_type)
            if index is None:
                index = self._types[room_type] = _TypeIndex()
            if instance_id not in index.members:
                index.members[instance_id] = instance
                index.no_max_connections += capacity[0]
                index.no_max_rooms += capacity[1]
                if index.modes() != index.ratio_modes:
                    index.rebuild()
                    self._rekey(index, room_type)
                    continue
            elif index.ratio_modes is None:
                continue
            if load is None:
                load = _load(instance, snapshot)
            entry = index.key(load)
            current = keys.get(room_type)
            if current == entry:
                continue
            if current is not None:
                index.entries.remove(current)
            index.entries.add(entry)
            keys[room_type] = entry

    def remove(self, instance: Instance) -> None:
        for room_type in list(self._keys.get(instance.id, {})):
            self._leave(instance, room_type)
        self._keys.pop(instance.id, None)
        self._capacity.pop(instance.id, None)
        self._filed.pop(instance.id, None)

    def _leave(self, instance: Instance, room_type: str) -> None:
        index = self._types.get(room_type)
        keys = self._keys.get(instance.id, {})
        entry = keys.pop(room_type, None)
        if index is None or index.members.pop(instance.id, None) is None:
            return
        capacity = self._capacity.get(instance.id, (False, False))
        index.no_max_connections -= capacity[0]
        index.no_max_rooms -= capacity[1]
        if not index.members:
            del self._types[room_type]
            return
        if index.modes() != index.ratio_modes:
            index.rebuild()
            self._rekey(index, room_type)
        elif entry is not None:
            index.entries.remove(entry)

    def _rekey(self, index: _TypeIndex, room_type: str) -> None:
        for instance_id in index.members:  # entries re-derived: file each anew next time
            self._filed.pop(instance_id, None)
        for entry in index.entries:
            self._keys.setdefault(entry[3], {})[room_type] = entry
        if index.ratio_modes is None:
            for instance_id in index.members:
                self._keys.setdefault(instance_id, {}).pop(room_type, None)

    # --- queries --------------------------------------------------------------------

    def ordered(self, room_type: str) -> bool:
        """Whether ``choose`` can answer for this type (known, and not mixed)."""
        index = self._types.get(room_type)
        return index is None or index.ratio_modes is not None

    def members(self, room_type: str) -> Mapping[str, Instance]:
        index = self._types.get(room_type)
        return index.members if index is not None else {}

    def choose(
        self,
        room_type: str,
        most_loaded: bool,
        fits: Callable[[Instance], bool],
        rng: random.Random,
    ) -> Instance | None:
        """The instance least- or most-loaded placement picks, or None without candidates."""
        index = self._types.get(room_type)
        if index is None:
            return None
        entries = index.entries
        members = index.members
        positions = range(len(entries) - 1, -1, -1) if most_loaded else range(len(entries))
        for position in positions:
            entry = entries[position]
            if not fits(members[entry[3]]):
                continue
            lo = entries.bisect_left((entry[0], entry[1], -1, ""))
            hi = entries.bisect_left((entry[0], entry[1], math.inf, ""))
            if hi - lo > _EXACT_TIES:
                for _ in range(_SAMPLES):
                    candidate = members[entries[lo + rng.randrange(hi - lo)][3]]
                    if fits(candidate):
                        return candidate
            ties = [t for e in entries.slice(lo, hi) if fits(t := members[e[3]])]
            return ties[0] if len(ties) == 1 else rng.choice(ties)
        return None
