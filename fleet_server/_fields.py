"""The one table of the room and instance fields (SPEC §1, §2, §11).

Each row names a field of :class:`~._models.RoomInfo` or :class:`~._models.InstanceInfo`
once: its Python attribute, its REST/JSON key (also its key in the stateHash entry), its
``rivalis.fleet.v1`` field, how it is encoded, whether the stateHash entry has it, and the
attributes of the agent's report it derives from (a :class:`~._snapshot.ReportedRoom`'s
for a room field, a :class:`~._snapshot.Snapshot`'s for an instance field; none when the
orchestrator supplies it). ``to_dict()``, the gRPC messages, the stateHash entry, the read
model's info builders and its snapshot comparison are generated from the rows at import
time, as straight-line code. A new field is a row here, its attribute on the dataclass
(in the same order) and its source in the agent's report.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

from fleet_agent import Capacity

__all__ = [
    "CAPACITY_FIELDS",
    "INSTANCE_FIELDS",
    "ROOM_FIELDS",
    "Encoding",
    "Field",
    "check_fields",
    "check_supplied",
    "compile_function",
    "json_object",
    "read_expression",
    "record_builder",
    "report_attributes",
]


class Encoding(Enum):
    """How a value is written on every surface."""

    TEXT = "text"  # str
    INT = "int"  # int
    BOOL = "bool"  # bool
    OPTIONAL_INT = "optional int"  # int | None: JSON null, an unset optional gRPC field
    LIST = "list"  # tuple[str, ...]: a JSON array, a repeated field
    MAPPING = "mapping"  # Mapping[str, str]: a JSON object (a copy), a map field
    CAPACITY = "capacity"  # Capacity: an object of CAPACITY_FIELDS, a Capacity message
    ROOMS = "rooms"  # tuple[RoomInfo, ...]: each room by ROOM_FIELDS, in order
    OBJECT = "object"  # a JSON object: canonical text in the report, a dict in the info,
    # a JSON object in REST and the stateHash, its canonical text in gRPC


@dataclass(frozen=True, slots=True)
class Field:
    attr: str  # the dataclass attribute, and the builders' parameter when supplied
    key: str  # the REST/JSON key and the stateHash key
    grpc: str  # the field of the rivalis.fleet.v1 message (control.proto)
    encoding: Encoding
    hashed: bool  # in the stateHash entry
    report: str | None  # the agent-report attribute it derives from; None: supplied
    sparse: bool = False  # hashed only when set (not None, not false, not 0, not empty)


TEXT, INT, BOOL, OPTIONAL_INT = Encoding.TEXT, Encoding.INT, Encoding.BOOL, Encoding.OPTIONAL_INT
LIST, MAPPING, CAPACITY, ROOMS = Encoding.LIST, Encoding.MAPPING, Encoding.CAPACITY, Encoding.ROOMS
OBJECT = Encoding.OBJECT
SPARSE = True  # the matchmaking fields (CONTRACT §11) keep the old hashes when unset

# fmt: off
ROOM_FIELDS: Final = (
    #     attribute           JSON key           gRPC field          encoding      hashed report
    Field("id",               "id",              "id",               TEXT,         True,  None),
    Field("type",             "type",            "type",             TEXT,         True,  "type"),
    Field("connections",      "connections",     "connections",      INT,          True,
          "connections"),
    Field("instance_id",      "instanceId",      "instance_id",      TEXT,         True,  None),
    Field("endpoint_url",     "endpointUrl",     "endpoint_url",     TEXT,         True,  None),
    Field("local",            "local",           "local",            BOOL,         True,  "local"),
    Field("metadata",         "metadata",        "metadata",         OBJECT,       True,
          "metadata", SPARSE),
    Field("max_connections",  "maxConnections",  "max_connections",  OPTIONAL_INT, True,
          "max_connections", SPARSE),
    Field("locked",           "locked",          "locked",           BOOL,         True,
          "locked", SPARSE),
    Field("reserved_seats",   "reservedSeats",   "reserved_seats",   INT,          True,
          None, SPARSE),
)

CAPACITY_FIELDS: Final = (
    Field("max_connections",  "maxConnections",  "max_connections",  OPTIONAL_INT, True,
          "max_connections"),
    Field("max_rooms",        "maxRooms",        "max_rooms",        OPTIONAL_INT, True,
          "max_rooms"),
)

INSTANCE_FIELDS: Final = (
    Field("id",               "id",              "id",               TEXT,         True,  None),
    Field("name",             "name",            "name",             TEXT,         True,  "name"),
    Field("process_uid",      "processUid",      "process_uid",      TEXT,         True,
          "process_uid"),
    Field("endpoint_url",     "endpointUrl",     "endpoint_url",     TEXT,         True,
          "endpoint_url"),
    Field("labels",           "labels",          "labels",           MAPPING,      True,  "labels"),
    Field("room_types",       "roomTypes",       "room_types",       LIST,         True,
          "room_types"),
    Field("rooms",            "rooms",           "rooms",            ROOMS,        True,  "rooms"),
    Field("connections",      "connections",     "connections",      INT,          True,  "rooms"),
    Field("capacity",         "capacity",        "capacity",         CAPACITY,     True,  None),
    Field("auto_create",      "autoCreate",      "auto_create",      BOOL,         True,
          "auto_create"),
    Field("status",           "status",          "status",           TEXT,         True,  "status"),
    Field("last_sync_at",     "lastSyncAt",      "last_sync_at",     INT,          False, None),
    Field("agent_version",    "agentVersion",    "agent_version",    TEXT,         True,
          "agent_version"),
    Field("protocol_version", "protocolVersion", "protocol_version", INT,          True,
          "protocol_version"),
)
# fmt: on

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEY: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")  # written into generated text unescaped


def _check_rows(fields: Iterable[Field]) -> None:
    for field in fields:
        if not (_IDENTIFIER.match(field.attr) and _IDENTIFIER.match(field.grpc)):
            raise TypeError(f"field {field.attr!r}: attribute and gRPC name must be identifiers")
        if not _KEY.match(field.key):
            raise TypeError(f"field {field.attr!r}: JSON key {field.key!r} must be alphanumeric")


for _table in (ROOM_FIELDS, CAPACITY_FIELDS, INSTANCE_FIELDS):
    _check_rows(_table)


def check_fields(cls: type, fields: tuple[Field, ...]) -> None:
    """Fail at import unless ``cls``'s dataclass fields are the rows' attributes, in order."""
    declared = tuple(f.name for f in dataclasses.fields(cls))
    if declared != tuple(field.attr for field in fields):
        raise TypeError(f"{cls.__name__} fields {declared} do not match the field table")


def report_attributes(fields: Iterable[Field]) -> tuple[str, ...]:
    """Every agent-report attribute the fields derive from, once each, in table order."""
    names: dict[str, None] = {}
    for field in fields:
        nested = CAPACITY_FIELDS if field.encoding is Encoding.CAPACITY else ()
        for name in (field.report, *report_attributes(nested)):
            if name is not None:
                names[name] = None
    return tuple(names)


def read_expression(field: Field, report: str, supplied: Collection[str]) -> str:
    """Source for a field's value in generated code: the parameter named like the field
    when it is ``supplied``, else its attribute of the ``report`` variable."""
    if field.attr in supplied:
        return field.attr
    if field.report is None:
        raise TypeError(f"field {field.attr!r} must be supplied: it has no report attribute")
    return f"{report}.{field.report}"


def check_supplied(fields: tuple[Field, ...], supplied: Collection[str]) -> None:
    """Fail at import when a supplied name is no field."""
    unknown = set(supplied) - {field.attr for field in fields}
    if unknown:
        raise TypeError(f"supplied values {sorted(unknown)} name no field")


def compile_function(
    name: str, source: str, env: dict[str, Any], *, module: str, qualname: str | None = None
) -> Callable[..., Any]:
    """Define the function ``name`` from generated ``source``, ``env`` its globals."""
    namespace = {"__name__": module, **env}
    exec(compile(source, f"<generated {module}.{qualname or name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    function.__qualname__ = qualname or name
    return function


_EMPTY_OBJECT: Final[Mapping[str, Any]] = MappingProxyType({})


@functools.lru_cache(maxsize=4096)
def json_object(text: str) -> Mapping[str, Any]:
    """The read-only object a canonical JSON object text holds (``""``: empty); parsed
    once per distinct text, since many rooms share their metadata."""
    if not text:
        return _EMPTY_OBJECT
    value = json.loads(text)
    return MappingProxyType(value) if isinstance(value, dict) else _EMPTY_OBJECT


def record_builder(
    cls: type, fields: tuple[Field, ...], supplied: tuple[str, ...], *, module: str
) -> Callable[..., Any]:
    """``build(report, *supplied)``: a ``cls`` whose fields are read from ``report`` (an
    object with the agent-report attributes) or given, in ``supplied`` order."""
    check_supplied(fields, supplied)
    values = []
    for field in fields:
        if field.encoding is Encoding.CAPACITY and field.attr not in supplied:
            limits = ", ".join(read_expression(sub, "report", ()) for sub in CAPACITY_FIELDS)
            values.append(f"Capacity({limits})")
        elif field.encoding is Encoding.OBJECT and field.attr not in supplied:
            values.append(f"json_object({read_expression(field, 'report', ())})")
        else:
            values.append(read_expression(field, "report", supplied))
    source = (
        f"def build(report, {', '.join(supplied)}):\n"
        f"    return {cls.__name__}({', '.join(values)})\n"
    )
    env = {cls.__name__: cls, "Capacity": Capacity, "json_object": json_object}
    return compile_function("build", source, env, module=module, qualname=f"{cls.__name__}.build")
