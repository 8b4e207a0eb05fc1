"""Public room ids, resolved incrementally (SPEC §7.3).

Every room claims the public form of its raw id. When several claim one, ``fleet``
beats ``local``, then the earlier joiner, then the lower instance id; the others are
namespaced ``<processUid>~<id>`` (``~2``, ``~3``… if that is taken too). A duplicate
fleet id is logged once per keeper, loser and id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ._instance import _Room

__all__ = ["PublicIds"]

log = logging.getLogger("fleet.server")


class PublicIds:
    """The claims on every public id and the room each one resolves to."""

    def __init__(self) -> None:
        # base public id -> its claimant, or a list when several claim it (rare: a list
        # per room would cost ~80 B each)
        self._claims: dict[str, _Room | list[_Room]] = {}
        self._public: dict[str, _Room] = {}
        self._warned_collisions: set[tuple[str, str, str]] = set()

    def _claim(self, room: _Room) -> None:
        held = self._claims.get(room.base)
        if held is None:
            self._claims[room.base] = room
        elif isinstance(held, _Room):
            self._claims[room.base] = [held, room]
        else:
            held.append(room)

    def _unclaim(self, room: _Room) -> None:
        """Withdraw a gone room's claim and free the public id it had."""
        held = self._claims[room.base]
        if held is room:
            del self._claims[room.base]
        else:
            assert isinstance(held, list)
            held.remove(room)
            if len(held) == 1:
                self._claims[room.base] = held[0]
        if self._public.get(room.public) is room:
            del self._public[room.public]

    def _resolve_bases(self, bases: Iterable[str]) -> dict[_Room, str]:
        """Resolve every claim on ``bases`` again; returns each claimant's public id
        from before (``""`` for a new room)."""
        before: dict[_Room, str] = {}
        for base in bases:
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
        return before

    def _resolve(self, base: str, claimants: list[_Room]) -> None:
        if len(claimants) > 1:
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
        if len(claimants) > 1:
            self._warn_collisions(base, claimants)

    def _warn_collisions(self, base: str, claimants: list[_Room]) -> None:
        keeper = claimants[0]
        if keeper.local:
            return
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
