"""Replies in parts and deltas on the agent's side (docs/snapshots-at-scale.md).

The orchestrator's ``Hello`` lists what it accepts (``Hello.features``). With
``"deltas"``, a Poll whose ``known_hash`` is the hash of the last reply this connection
sent is answered with the rooms changed and removed since that reply. With ``"parts"``,
a reply that would not fit in one frame is cut into frames at room boundaries, every
non-room field in the first. Without either, replies are what they always were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from . import wire

__all__ = ["DELTAS", "MAX_PARTS", "PARTS", "PART_BUDGET", "delta_fields", "frames_of"]

PARTS: Final = "parts"
DELTAS: Final = "deltas"
MAX_PARTS: Final = 64
PART_BUDGET: Final = wire.MAX_FRAME_BYTES - 4096
"""The bytes of fields one part may carry: the cap minus room for the message header and
the fields every part repeats (req_id, full, seq, hash, base_hash, part, parts)."""

_BASE_HASH: Final = b"\x8a\x01"  # field 17, length-delimited
_REMOVED: Final = b"\x92\x01"  # field 18, length-delimited
_PART: Final = b"\x98\x01"  # field 19, varint
_PARTS: Final = b"\xa0\x01"  # field 20, varint


def _string(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + wire.varint(len(raw)) + raw


def delta_fields(base_hash: str, removed: Iterable[str]) -> tuple[bytes, list[bytes]]:
    """The ``base_hash`` field and one ``removed_rooms`` entry per id, encoded."""
    return _string(_BASE_HASH, base_hash), [_string(_REMOVED, room_id) for room_id in removed]


def frames_of(
    req_id: str,
    seq: int,
    head: bytes,
    hash_head: bytes,
    items: Sequence[bytes],
    tail: bytes,
    base: bytes = b"",
) -> list[bytes]:
    """A full reply or a delta as one frame when it fits, else as parts.

    ``head`` is fields 4-13 (the hash, the identity, the room types), ``hash_head`` the
    hash field alone (what later parts repeat), ``items`` the encoded room entries and
    ``removed_rooms`` entries in order, ``tail`` fields 15-16 and ``base`` the encoded
    ``base_hash`` of a delta.
    """
    fixed = len(head) + len(tail) + len(base)
    total = fixed + sum(map(len, items))
    if total <= PART_BUDGET:
        return [wire.state_frame(req_id, seq, head, items, tail + base, full=True)]
    slices: list[tuple[int, int]] = []
    start, size, budget = 0, 0, PART_BUDGET - fixed
    for index, item in enumerate(items):
        if size + len(item) > budget and index > start:
            slices.append((start, index))
            start, size, budget = index, 0, PART_BUDGET - len(hash_head) - len(base)
        size += len(item)
    slices.append((start, len(items)))
    count = len(slices)
    if count == 1:  # one item alone over the budget: sent whole, as without parts
        return [wire.state_frame(req_id, seq, head, items, tail + base, full=True)]
    frames = []
    for number, (first, last) in enumerate(slices, start=1):
        numbers = _PART + wire.varint(number) + _PARTS + wire.varint(count)
        if number == 1:
            frame_head, frame_tail = head, tail + base + numbers
        else:
            frame_head, frame_tail = hash_head, base + numbers
        frames.append(
            wire.state_frame(req_id, seq, frame_head, items[first:last], frame_tail, full=True)
        )
    return frames
