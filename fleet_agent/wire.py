"""The agent wire codec, the canonical hash and the snapshot limits, shared by both halves
of the fleet.

One binary WebSocket message is the 2-byte header ``[3, 0]`` (protocol major,
minor) followed by one serialized :class:`rivalis.fleet.v3.agent_pb2.Frame`.
The orchestrator imports this module; it never imports anything from the server.

Errors::

    WireError
    ├── TruncatedFrameError      fewer than 2 bytes
    ├── ProtocolVersionError     header major is not 3
    ├── UndecodableFrameError    the body is not a Frame
    └── FrameTooLargeError       over 4 MiB, header included
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, TypeAlias

from google.protobuf.message import DecodeError
from rivalis.fleet.v3 import agent_pb2

__all__ = [
    "HEADER",
    "MAX_ACCEPTED_RESERVATIONS",
    "MAX_CONNECTIONS",
    "MAX_ENDPOINT_URL",
    "MAX_FRAME_BYTES",
    "MAX_LABELS",
    "MAX_LABEL_KEY",
    "MAX_LABEL_VALUE",
    "MAX_METADATA_BYTES",
    "MAX_NAME",
    "MAX_OPTIONS_BYTES",
    "MAX_RESERVATION_ID",
    "MAX_ROOMS",
    "MAX_ROOM_ID",
    "MAX_ROOM_TYPE",
    "MAX_ROOM_TYPES",
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "SNAPSHOT_STATUSES",
    "SUBPROTOCOL",
    "URL_SCHEMES",
    "FrameTooLargeError",
    "ProtocolVersionError",
    "RoomRow",
    "TruncatedFrameError",
    "UndecodableFrameError",
    "WireError",
    "canonical_json",
    "canonical_text",
    "decode_frame",
    "encode_frame",
    "hash64",
    "hash64_text",
    "object_text",
    "parse_object_text",
    "room_entry",
    "room_entry_text",
    "snapshot_hash",
    "state_frame",
    "varint",
]

PROTOCOL_MAJOR: Final = 3
PROTOCOL_MINOR: Final = 0
HEADER: Final = bytes((PROTOCOL_MAJOR, PROTOCOL_MINOR))
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
SUBPROTOCOL: Final = "rivalis-fleet.v1"

# --- snapshot limits (SPEC §4) ---------------------------------------------------
# The orchestrator rejects a full State past any of these; the agent refuses options
# that would produce one. Lengths count characters.
MAX_ENDPOINT_URL: Final = 512
MAX_NAME: Final = 64
MAX_ROOM_TYPES: Final = 256
"""Entries in ``room_types``."""
MAX_ROOM_TYPE: Final = 64
"""Length of a room type, in ``room_types`` and in each room."""
MAX_ROOMS: Final = 50_000
MAX_LABELS: Final = 32
MAX_LABEL_KEY: Final = 64
MAX_LABEL_VALUE: Final = 64
MAX_ROOM_ID: Final = 256
MAX_CONNECTIONS: Final = 1_000_000
"""Connections of one room."""
URL_SCHEMES: Final = frozenset({"ws", "wss", "http", "https"})
"""Schemes an ``endpoint_url`` may use."""
SNAPSHOT_STATUSES: Final = frozenset({"active", "draining"})
MAX_METADATA_BYTES: Final = 2048
"""A room's metadata: the canonical text of a JSON object, UTF-8 bytes."""
MAX_OPTIONS_BYTES: Final = 4096
"""A create command's options: the canonical text of a JSON object, UTF-8 bytes."""
MAX_ACCEPTED_RESERVATIONS: Final = 10_000
MAX_RESERVATION_ID: Final = 64


class WireError(ValueError):
    """A message that is not a valid protocol-3 frame."""


class TruncatedFrameError(WireError):
    def __init__(self, size: int) -> None:
        super().__init__(f"truncated frame: {size} bytes, header needs 2")
        self.size = size


class ProtocolVersionError(WireError):
    def __init__(self, major: int) -> None:
        super().__init__(f"protocol version mismatch: got major {major}, expected {PROTOCOL_MAJOR}")
        self.major = major


class UndecodableFrameError(WireError):
    def __init__(self) -> None:
        super().__init__("undecodable frame: body is not a rivalis.fleet.v3.Frame")


class FrameTooLargeError(WireError):
    def __init__(self, size: int) -> None:
        super().__init__(f"frame too large: {size} bytes exceeds {MAX_FRAME_BYTES}")
        self.size = size


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf base-128 varint, for frames written as bytes."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_TAG_STATE: Final = b"\x1a"  # Frame.state: field 3, length-delimited
_TAG_ROOM: Final = b"\x72"  # State.rooms: field 14, length-delimited
_FULL: Final = b"\x10\x01"  # State.full = true: field 2, varint 1


def room_entry(row: RoomRow) -> bytes:
    """One room of a full ``State`` as it sits in the message: the tag of ``rooms``
    (field 14), the length, then the serialized ``RoomState``. A full State is its other
    fields with the entries of its rooms between ``room_types`` (13) and ``status`` (15),
    in the order they are listed, so an entry encoded once serves every reply until the
    room changes (see :func:`state_frame`)."""
    room = agent_pb2.RoomState(id=row[0], type=row[1], connections=row[2], origin=row[3])
    if len(row) == 7:
        if row[4]:
            room.metadata = row[4]
        if row[5] is not None:
            room.max_connections = row[5]
        room.locked = row[6]
    body = room.SerializeToString()
    return b"".join((_TAG_ROOM, varint(len(body)), body))


def state_frame(
    req_id: str,
    seq: int,
    head: bytes,
    rooms: Sequence[bytes] = (),
    tail: bytes = b"",
    *,
    full: bool = False,
) -> bytes:
    """One ``State`` reply as a whole message, header included, byte for byte what
    ``encode_frame(Frame(state=State(...)))`` gives for the same fields.

    A State is written in field order: ``req_id`` (1), ``full`` (2) and ``seq`` (3),
    which change with every reply, then ``head``: the serialized fields 4 to 13 (``hash``
    and, in a full reply, the identity and ``room_types``), then ``rooms``: the
    :func:`room_entry` of each room in id order, then ``tail``: the serialized fields 15
    and 16 (``status``, ``accepted_reservations``). A hash-only reply is ``head`` = the
    ``hash`` field alone, without rooms or tail.
    """
    raw = req_id.encode()
    size = len(raw)
    prefix = b"\x0a" + (bytes((size,)) if size < 0x80 else varint(size)) + raw if raw else b""
    if full:
        prefix += _FULL
    if seq:
        prefix += b"\x18" + (bytes((seq,)) if seq < 0x80 else varint(seq))
    if not rooms and not tail:  # a hash-only reply: a few dozen bytes
        body = prefix + head
        return b"".join((HEADER, _TAG_STATE, varint(len(body)), body))
    size = len(prefix) + len(head) + sum(map(len, rooms)) + len(tail)
    return b"".join((HEADER, _TAG_STATE, varint(size), prefix, head, *rooms, tail))


def encode_frame(frame: agent_pb2.Frame) -> bytes:
    """Serialize ``frame`` behind the protocol header."""
    return HEADER + frame.SerializeToString()


def decode_frame(data: bytes) -> agent_pb2.Frame:
    """Parse one binary message; raise a :class:`WireError` subclass when it is not a frame."""
    size = len(data)
    if size > MAX_FRAME_BYTES:
        raise FrameTooLargeError(size)
    if size < 2:
        raise TruncatedFrameError(size)
    if data[0] != PROTOCOL_MAJOR:
        raise ProtocolVersionError(data[0])
    frame = agent_pb2.Frame()
    try:
        frame.ParseFromString(data[2:])
    except DecodeError as exc:
        raise UndecodableFrameError() from exc
    return frame


# --- canonical JSON and hashing -------------------------------------------------

_dumps = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


_quote: Callable[[str], str] = json.encoder.encode_basestring
"""A JSON string literal, escaped as :data:`_dumps` escapes it (``ensure_ascii=False``)."""


def _normalize(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Compact JSON with keys sorted at every depth; integral floats as ints, NaN/inf as null."""
    return _dumps(_normalize(value))


def canonical_text(value: Any) -> str:
    """:func:`canonical_json` for values already made of str, int, bool, None, dicts with
    string keys, lists and tuples: the same text without the normalizing copy."""
    return _dumps(value)


def object_text(value: Any, limit: int, what: str) -> str:
    """The canonical text of a JSON object (docs/matchmaking.md §1); ``ValueError`` naming
    ``what`` when ``value`` is not a JSON object or its text is over ``limit`` bytes."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    try:
        text = canonical_json(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{what} must be JSON: strings, numbers, booleans, null, lists and objects"
        ) from None
    if len(text.encode()) > limit:
        raise ValueError(f"{what} must be at most {limit} bytes as canonical JSON")
    return text


def parse_object_text(text: str, limit: int, what: str) -> dict[str, Any]:
    """The JSON object ``text`` holds (empty text: ``{}``); ``ValueError`` naming ``what``
    when it is not a JSON object or is over ``limit`` bytes."""
    if not text:
        return {}
    if len(text.encode()) > limit:
        raise ValueError(f"{what} must be at most {limit} bytes")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"{what} must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def hash64_text(text: str) -> str:
    """First 8 bytes of SHA-256 of ``text`` (UTF-8) as 16 lowercase hex chars."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def hash64(value: Any) -> str:
    """``hash64_text(canonical_json(value))``."""
    return hash64_text(canonical_json(value))


RoomRow: TypeAlias = tuple[str, str, int, str] | tuple[str, str, int, str, str, int | None, bool]
"""One room of a snapshot: ``(id, type, connections, origin)``, optionally followed by
``(metadata, max_connections, locked)`` where ``metadata`` is the canonical text of a JSON
object (``""``: none) and ``max_connections`` is ``None`` when unlimited."""

_ROW_ORDER: Final = itemgetter(0, 1, 2, 3)


def room_entry_text(row: RoomRow) -> str:
    """The canonical text of one room entry of the snapshot hash (docs/matchmaking.md §2):
    ``metadata``, ``maxConnections`` and ``locked`` appear only when set, and the metadata
    text (already canonical) is spliced in as it is, not parsed again."""
    # keys in code-point order: connections, id, locked, maxConnections, metadata, origin, type
    parts = ['{"connections":', str(row[2]), ',"id":', _quote(row[0])]
    if len(row) == 7:
        if row[6]:
            parts.append(',"locked":true')
        if row[5] is not None:
            parts += (',"maxConnections":', str(row[5]))
        if row[4]:
            parts += (',"metadata":', row[4])
    parts += (',"origin":', _quote(row[3]), ',"type":', _quote(row[1]), "}")
    return "".join(parts)


def snapshot_hash(
    *,
    name: str,
    process_uid: str,
    agent_version: str,
    protocol_version: int,
    endpoint_url: str,
    labels: Mapping[str, str],
    max_connections: int | None,
    max_rooms: int | None,
    auto_create: bool,
    room_types: Sequence[str],
    rooms: Sequence[RoomRow],
    status: str,
    accepted_reservations: Sequence[str] = (),
    entry_text: Callable[[RoomRow], str] = room_entry_text,
    entries: Iterable[str] | None = None,
) -> str:
    """The agent's snapshot hash (SPEC §2, docs/matchmaking.md §2); see :data:`RoomRow`.

    ``entry_text`` turns a row into its canonical text (:func:`room_entry_text`); a caller
    that keeps the texts of unchanged rooms passes a cached lookup, or passes ``entries``,
    the texts of every room already in id order (``rooms`` is then not read). A snapshot
    without metadata, room capacity, locks or accepted reservations hashes as before them.
    """
    value: dict[str, object] = {
        "name": name,
        "processUid": process_uid,
        "agentVersion": agent_version,
        "protocolVersion": protocol_version,
        "endpointUrl": endpoint_url,
        "labels": dict(labels),
        "capacity": {"maxConnections": max_connections, "maxRooms": max_rooms},
        "autoCreate": auto_create,
        "roomTypes": sorted(room_types),
    }
    if accepted_reservations:
        value["acceptedReservations"] = sorted(accepted_reservations)
    if entries is None:
        entries = (entry_text(row) for row in sorted(rooms, key=_ROW_ORDER))
    joined = ",".join(entries)
    # "rooms" and then "status" are the last keys in code-point order
    text = f'{_dumps(value)[:-1]},"rooms":[{joined}],"status":{_dumps(status)}}}'
    return hash64_text(text)
