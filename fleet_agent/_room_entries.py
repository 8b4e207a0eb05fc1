"""The rooms of the agent's snapshot in id order, each kept as its row, the canonical text
it adds to the hash and its encoded ``State.rooms`` entry, updated room by room.

A room's text and entry are made once per change of the room, never per poll: the hash
of a changed snapshot is one join of the kept texts, a full reply one join of the kept
entries. Each change also records the :attr:`RoomEntries.version` it made, so the rooms
changed or removed since any earlier version are cheap to list (:meth:`changes_since`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from . import wire

__all__ = ["RoomChanges", "RoomEntries"]

_REMOVED_KEPT: Final = wire.MAX_ROOMS
"""How many removed ids :meth:`RoomEntries.changes_since` remembers (the oldest go first)."""


@dataclass(frozen=True, slots=True)
class RoomChanges:
    """The rooms added or changed (``changed``) and removed (``removed``) after a version."""

    changed: tuple[str, ...]
    removed: tuple[str, ...]


class RoomEntries:
    """Rows by id, with the sorted lists :attr:`ids`, :attr:`texts` and :attr:`entries`
    (index ``i`` of each is one room) kept in step."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.entries: list[bytes] = []
        self.rows: dict[str, wire.RoomRow] = {}
        self.version = 0
        """Bumped by every change; the change records the new value."""
        self._changed_at: dict[str, int] = {}
        self._removed_at: dict[str, int] = {}
        self._forgotten = 0  # the newest version whose removals are no longer all kept

    def __len__(self) -> int:
        return len(self.ids)

    def put(self, row: wire.RoomRow) -> bool:
        """Add or update the room of ``row``; ``False`` when it was already so."""
        room_id = row[0]
        old = self.rows.get(room_id)
        if old == row:
            return False
        self.rows[room_id] = row
        text = wire.room_entry_text(row)
        entry = wire.room_entry(row)
        ids = self.ids
        index = bisect_left(ids, room_id)
        if old is None:
            ids.insert(index, room_id)
            self.texts.insert(index, text)
            self.entries.insert(index, entry)
            self._removed_at.pop(room_id, None)
        else:
            self.texts[index] = text
            self.entries[index] = entry
        self.version += 1
        self._changed_at[room_id] = self.version
        return True

    def remove(self, room_id: str) -> bool:
        """Drop the room ``room_id``; ``False`` when it was not there."""
        if self.rows.pop(room_id, None) is None:
            return False
        index = bisect_left(self.ids, room_id)
        del self.ids[index], self.texts[index], self.entries[index]
        del self._changed_at[room_id]
        self.version += 1
        removed = self._removed_at
        removed[room_id] = self.version
        if len(removed) > _REMOVED_KEPT:
            oldest = next(iter(removed))
            self._forgotten = removed.pop(oldest)
        return True

    def replace(self, rows: Sequence[wire.RoomRow]) -> bool:
        """Make the rooms exactly ``rows`` (sorted by id, unique); ``True`` if any changed."""
        changed = False
        if len(rows) != len(self.ids) or any(
            row[0] != room_id for row, room_id in zip(rows, self.ids, strict=False)
        ):
            present = {row[0] for row in rows}
            for room_id in [r for r in self.ids if r not in present]:
                changed = self.remove(room_id) or changed
        for row in rows:
            changed = self.put(row) or changed
        return changed

    def entry(self, room_id: str) -> bytes:
        """The encoded entry of the room ``room_id`` (which must be kept)."""
        return self.entries[bisect_left(self.ids, room_id)]

    def changes_since(self, version: int) -> RoomChanges | None:
        """The rooms changed and removed after ``version`` (a value :attr:`version` had),
        each list in id order; ``None`` when removals that old are no longer all known."""
        if version < self._forgotten:
            return None
        changed = sorted(rid for rid, at in self._changed_at.items() if at > version)
        removed = sorted(rid for rid, at in self._removed_at.items() if at > version)
        return RoomChanges(tuple(changed), tuple(removed))
