"""Where a one-frame State's parts sit in the bytes as received: its head and its rooms.

A reply's non-room fields (name to room types, fields 5–13: the *head*) are the same
from one reply to the next for nearly every agent; reading and checking them through
protobuf costs more than finding their bytes. Equal head bytes make equal fields, so a
reply whose head is the applied snapshot's takes its fields over without reading them
(:func:`~._snapshot.parse_snapshot`, :func:`~._replies.apply_reply`).

A quiet instance still sends a full reply every twelfth poll (the forced full, SPEC
§3.3). Reading its rooms again costs about 4 µs per room; their length and hash (the
*rooms key*) cost a fraction of that. Equal keys mean the rooms were sent as the same
bytes, which make the same rooms: the applied snapshot's are taken over. The link asks
for the key of forced full replies only: a full reply to a poll that carried the applied
hash says that something changed, and would pay for the key for nothing. The hash is
Python's (keyed per process); two different room lists with one length and one hash
would only keep an agent's own earlier rooms until its next change.

Same bytes make the same values only when no other occurrence of those fields follows
(protobuf keeps the last): a head or rooms that are not one contiguous run give no
head or no key, and the reply is read in full.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["RoomsKey", "StateLayout", "rooms_key", "state_layout"]

RoomsKey = tuple[int, int] | None  # the length and hash of a reply's room entries as sent
_STATE_TAG: Final = 0x1A  # after the version bytes: Frame field 3 (state)
_ROOMS_TAG: Final = 0x72  # State field 14 (rooms), length-delimited
_HEAD_FIRST: Final = 5  # State fields 5 (name) to 13 (room_types)
_HEAD_LAST: Final = 13
_ACCEPTED: Final = 16  # State field 16 (accepted_reservations)
_EXTENDED: Final = 17  # State fields 17 (base_hash) to 20 (parts): deltas and parts
_HEAD_TAGS: Final = tuple(_HEAD_FIRST <= byte >> 3 <= _HEAD_LAST for byte in range(256))
"""Per first byte: a one-byte tag of a head field."""


class StateLayout(NamedTuple):
    """What :func:`state_layout` found in a State frame."""

    head: bytes  # fields 5–13 as sent (b"" when none is)
    rooms: RoomsKey  # the rooms key, when asked for and the rooms are one run
    accepted: bool  # field 16 (accepted reservations) is present
    extended: bool  # a field of deltas or parts (17–20) is present: see is_extended


def state_layout(
    frame: bytes, *, rooms: bool = False, head: bytes | None = None
) -> StateLayout | None:
    """The layout of ``frame`` (a whole State frame, as received), with the rooms key
    when ``rooms``; None when the bytes are not a State protobuf reads the same way.
    ``head``: the applied snapshot's, likely sent again; compared, not walked."""
    if not isinstance(frame, bytes) or len(frame) < 4 or frame[2] != _STATE_TAG:
        return None
    try:
        return _layout(frame, rooms, head)
    except IndexError:  # cut short (a frame protobuf took would not be)
        return None


def rooms_key(frame: bytes) -> RoomsKey:
    """The rooms key of ``frame``, or None when its rooms are not one contiguous run."""
    layout = state_layout(frame, rooms=True)
    return layout.rooms if layout is not None else None


def _layout(frame: bytes, want_rooms: bool, known: bytes | None) -> StateLayout | None:
    size, pos = _varint(frame, 3)
    end = pos + size
    if end != len(frame):
        return None
    head_start = head_stop = rooms_start = rooms_stop = -1
    accepted = extended = jumped = False
    while pos < end:
        start = pos
        tag = frame[pos]
        if tag == _ROOMS_TAG:
            if rooms_start >= 0:
                return None  # a second run of rooms
            rooms_start = pos
            pos = rooms_stop = _rooms_run(frame, pos, end)
            continue
        if head_start < 0 and _HEAD_TAGS[tag] and known and frame.startswith(known, pos):
            head_start = pos
            pos = head_stop = pos + len(known)  # the known head: whole fields
            jumped = True
            continue
        if tag < 0x80:  # fields 1 to 15: a one-byte tag
            pos += 1
        else:
            tag, pos = _varint(frame, pos)
        kind = tag & 7
        if kind == 2:  # length-delimited
            length = frame[pos]
            pos = pos + 1 + length if length < 0x80 else _skip(frame, pos)
        elif kind == 0:  # varint
            pos = pos + 1 if frame[pos] < 0x80 else _varint(frame, pos)[1]
        else:  # State has no fixed-width or group fields
            return None
        field = tag >> 3
        if _HEAD_FIRST <= field <= _HEAD_LAST:
            if head_start < 0:
                head_start = start
            elif head_stop != start:
                return None  # a head field after another field: not one run
            head_stop = pos
        elif field == _ACCEPTED:
            accepted = True
        elif field >= _EXTENDED:
            extended = True
    if pos != end:
        return None
    if head_start < 0:
        head = b""
    elif jumped and head_stop - head_start == len(known or b""):
        head = known or b""  # compared above (a run that only starts like it is longer)
    else:
        head = frame[head_start:head_stop]
    if not want_rooms:
        return StateLayout(head, None, accepted, extended)
    if rooms_start < 0:
        return StateLayout(head, (0, 0), accepted, extended)
    key = (rooms_stop - rooms_start, hash(memoryview(frame)[rooms_start:rooms_stop]))
    return StateLayout(head, key, accepted, extended)


def _rooms_run(frame: bytes, pos: int, end: int) -> int:
    """The position after the run of room entries that starts at ``pos``."""
    while pos < end and frame[pos] == _ROOMS_TAG:
        length = frame[pos + 1]  # a room under 128 bytes: a one-byte length
        pos = pos + 2 + length if length < 0x80 else _skip(frame, pos + 1)
    return pos


def _skip(data: bytes, pos: int) -> int:
    """The position after the length-delimited value whose length is at ``pos``."""
    length = data[pos]
    if length < 0x80:
        return pos + 1 + length
    length, pos = _varint(data, pos)
    return pos + length


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError when cut short)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
