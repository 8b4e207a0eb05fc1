"""The key of a one-frame State's rooms as sent: their length and hash.

A quiet instance still sends a full reply every twelfth poll (the forced full, SPEC
§3.3). Reading its rooms again costs about 4 µs per room; finding their bytes in the
frame and hashing them costs a fraction of that (13 µs for 20 rooms against 44 µs
saved). Equal keys mean the rooms were sent as the same bytes, which make the same
rooms: the applied snapshot's are taken over (:func:`~._snapshot.parse_snapshot`). The
link takes the key of forced full replies only: a full reply to a poll that carried
the applied hash says that something changed, and would pay for the key for nothing.
The hash is Python's (keyed per process); two different room lists with one length and
one hash would only keep an agent's own earlier rooms until its next change.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RoomsKey", "rooms_key"]

RoomsKey = tuple[int, int] | None  # the length and hash of a reply's room entries as sent
_STATE_TAG: Final = 0x1A  # after the version bytes: Frame field 3 (state)
_ROOMS_TAG: Final = 0x72  # State field 14 (rooms), length-delimited


def rooms_key(frame: bytes) -> RoomsKey:
    """The length and hash of the room entries of ``frame`` (a whole State frame, as
    received), or None when they are not one contiguous run (every encoder writes them
    so) or the bytes are not a State. Equal keys: the rooms were sent as the same bytes.
    """
    if not isinstance(frame, bytes) or len(frame) < 4 or frame[2] != _STATE_TAG:
        return None
    try:
        return _rooms_key(frame)
    except IndexError:  # cut short (a frame protobuf took would not be)
        return None


def _rooms_key(frame: bytes) -> RoomsKey:
    size, pos = _varint(frame, 3)
    end = pos + size
    if end != len(frame):
        return None
    start = stop = -1
    while pos < end:
        tag = frame[pos]
        if tag == _ROOMS_TAG:
            if start >= 0:
                return None  # a second run of rooms
            start = pos
            while pos < end and frame[pos] == _ROOMS_TAG:
                length = frame[pos + 1]  # a room under 128 bytes: a one-byte length
                pos = pos + 2 + length if length < 0x80 else _skip(frame, pos + 1)
            stop = pos
            continue
        if tag < 0x80:  # fields 1 to 15: a one-byte tag
            pos += 1
        else:
            tag, pos = _varint(frame, pos)
        if tag & 7 == 2:  # length-delimited
            pos = _skip(frame, pos)
        elif tag & 7 == 0:  # varint
            pos = _varint(frame, pos)[1]
        else:  # State has no fixed-width or group fields
            return None
    if pos != end:
        return None
    if start < 0:
        return (0, 0)
    return (stop - start, hash(memoryview(frame)[start:stop]))


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
