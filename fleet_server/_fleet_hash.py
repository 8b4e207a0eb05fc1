"""The fleet's stateHash (SPEC §2): per-instance canonical entries and the sliced digest.

An instance's entry is the canonical JSON of its ``InstanceInfo.to_dict()`` without the
unhashed fields (``lastSyncAt``). It is written by :func:`encode_entry`, generated from
the field table at import time: one f-string per room and one for the instance, keys
sorted, strings escaped only where the canonical encoder would, about 1 µs per room. The
fleet hash feeds the entries to SHA-256 piecewise (:class:`SyncJob`), a slice at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from fleet_agent.wire import canonical_text

from ._fields import (
    CAPACITY_FIELDS,
    INSTANCE_FIELDS,
    ROOM_FIELDS,
    Encoding,
    Field,
    check_supplied,
    compile_function,
    read_expression,
)
from ._models import FleetStats

if TYPE_CHECKING:
    from ._instance import _Room
    from ._snapshot import Snapshot

__all__ = ["EMPTY_HASH", "EntryEncoder", "SyncJob", "encode_entry", "fleet_digest"]

EMPTY_HASH: Final = "4f53cda18c2baa0c"

_NEEDS_ESCAPE: Final = re.compile(r'["\\\x00-\x1f]')


def _json_string(text: str) -> str:
    """``text`` as canonical JSON (``"…"``), escaping only where the encoder would."""
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return canonical_text(text)


class EntryEncoder(Protocol):
    """The generated :func:`encode_entry`: the values the read model supplies, by name,
    and the instance's rooms in list order; every other value is read from ``snap``."""

    def __call__(
        self,
        snap: Snapshot,
        rooms: list[_Room],
        *,
        id: str,
        connections: int,
        status: str,
        room_instance_id: str,
        room_endpoint_url: str,
    ) -> str: ...


# Supplied values: the instance's (parameters named like the field), each room's own
# (attributes of its ``_Room``) and the values its rooms copy from the instance
# (parameters ``room_<attribute>``).
_INSTANCE_SUPPLIED: Final = ("id", "rooms", "connections", "status")
_ROOM_OWN: Final = {"id": "public", "reserved_seats": "reserved"}
_ROOM_SHARED: Final = ("instance_id", "endpoint_url")

_Piece = tuple[str, bool]  # f-string source, and whether it differs from room to room


_SCALAR_TEXT: Final[dict[Encoding, Callable[[str], str]]] = {
    Encoding.TEXT: lambda value: f"{{_json_string({value})}}",
    Encoding.INT: lambda value: f"{{{value}}}",
    Encoding.BOOL: lambda value: f'{{"true" if {value} else "false"}}',
    Encoding.OPTIONAL_INT: lambda value: f'{{"null" if {value} is None else {value}}}',
    Encoding.LIST: lambda value: f"{{_canonical({value})}}",
    Encoding.MAPPING: lambda value: f"{{_canonical(dict({value}))}}",
    Encoding.OBJECT: lambda value: f"{{{value}}}",  # the report holds canonical text
}

# A sparse field's value as canonical JSON, and whether it is set (written at all).
_SPARSE_TEXT: Final[dict[Encoding, tuple[Callable[[Any], str], Callable[[Any], bool]]]] = {
    Encoding.TEXT: (_json_string, bool),
    Encoding.INT: (str, bool),
    Encoding.BOOL: (lambda value: "true" if value else "false", bool),
    Encoding.OPTIONAL_INT: (str, lambda value: value is not None),
    Encoding.OBJECT: (str, bool),
}


def _sparse_writer(field: Field) -> Callable[[Any], str]:
    """``,"key":value`` for a set value of ``field``, ``""`` for an unset one."""
    found = _SPARSE_TEXT.get(field.encoding)
    if found is None:
        raise TypeError(f"field {field.attr!r}: no sparse text for {field.encoding}")
    write, is_set = found
    prefix = f',"{field.key}":'
    return lambda value: prefix + write(value) if is_set(value) else ""


def _scalar_text(encoding: Encoding, value: str) -> str:
    """An f-string replacement field writing ``value`` (an expression) as canonical JSON."""
    write = _SCALAR_TEXT.get(encoding)
    if write is None:
        raise TypeError(f"no canonical text for {encoding}")
    return write(value)


def _object(fields: tuple[Field, ...], value: Callable[[Field], _Piece]) -> list[_Piece]:
    """The object of ``fields``'s hashed values, keys sorted, as f-string pieces. A sparse
    field (only the rooms' have them) calls its writer, ``_sparse_<key>``, which writes
    ``,"key":value`` only when the value is set."""
    pieces: list[_Piece] = []
    for field in sorted((f for f in fields if f.hashed), key=lambda f: f.key):
        if field.sparse:
            if not pieces:
                raise TypeError(f"sparse field {field.attr!r} cannot come first")
            expression, per_room = _room_expression(field)
            pieces.append((f"{{_sparse_{field.key}({expression})}}", per_room))
            continue
        pieces.append((("," if pieces else "{{") + f'"{field.key}":', False))
        pieces.append(value(field))
    pieces.append(("}}" if pieces else "{{}}", False))
    return pieces


def _room_expression(field: Field) -> tuple[str, bool]:
    """The expression of a room field's value, and whether it varies from room to room."""
    if field.attr in _ROOM_OWN:
        return f"room.{_ROOM_OWN[field.attr]}", True
    if field.attr in _ROOM_SHARED:
        return f"room_{field.attr}", False
    # every other value has a slot of the ``_Room``, named like its report attribute
    return read_expression(field, "room", ()), True


def _room_value(field: Field) -> _Piece:
    expression, per_room = _room_expression(field)
    return _scalar_text(field.encoding, expression), per_room


def _instance_value(field: Field) -> _Piece:
    if field.encoding is Encoding.ROOMS:
        return "[{fragments}]", False
    if field.encoding is Encoding.CAPACITY:
        limits = _object(
            CAPACITY_FIELDS,
            lambda sub: (_scalar_text(sub.encoding, read_expression(sub, "snap", ())), False),
        )
        return "".join(text for text, _ in limits), False
    return _scalar_text(field.encoding, read_expression(field, "snap", _INSTANCE_SUPPLIED)), False


def _fold(pieces: list[_Piece]) -> tuple[list[str], str]:
    """Runs of pieces that are alike for every room become strings made once per entry
    (``piece_<n>``); returns their assignments and the f-string source for one room."""
    assignments: list[str] = []
    template: list[str] = []
    run: list[str] = []
    for text, per_room in [*pieces, ("", True)]:
        if not per_room:
            run.append(text)
            continue
        if run:
            name = f"piece_{len(assignments)}"
            assignments.append(f"    {name} = f'{''.join(run)}'")
            template.append(f"{{{name}}}")
            run.clear()
        template.append(text)
    return assignments, "".join(template)


def _entry_source() -> str:
    check_supplied(INSTANCE_FIELDS, _INSTANCE_SUPPLIED)
    check_supplied(ROOM_FIELDS, (*_ROOM_OWN, *_ROOM_SHARED))
    supplied = ", ".join(a for a in _INSTANCE_SUPPLIED if a != "rooms")
    shared = ", ".join(f"room_{attr}" for attr in _ROOM_SHARED)
    pieces, room = _fold(_object(ROOM_FIELDS, _room_value))
    instance = "".join(text for text, _ in _object(INSTANCE_FIELDS, _instance_value))
    return "\n".join(
        [
            f"def encode_entry(snap, rooms, *, {supplied}, {shared}):",
            *pieces,
            f"    fragments = ','.join([f'{room}' for room in rooms])",
            f"    return f'{instance}'\n",
        ]
    )


encode_entry: Final[EntryEncoder] = compile_function(
    "encode_entry",
    _entry_source(),
    {
        "_json_string": _json_string,
        "_canonical": canonical_text,
        **{f"_sparse_{f.key}": _sparse_writer(f) for f in ROOM_FIELDS if f.sparse and f.hashed},
    },
    module=__name__,
)


def fleet_digest(entries: list[bytes]) -> str:
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
