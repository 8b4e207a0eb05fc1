"""Strict parsing of REST input: list filters, paging parameters, the request bodies.

Every malformed input raises the core's ``VALIDATION`` error (SPEC §10 "Filters and
body"), so nothing malformed reaches the fleet service. Unknown query parameters are
ignored; unknown body keys are not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, get_args

from multidict import MultiMapping

from fleet_server._interfaces import (
    MAX_TTL_S,
    MIN_TTL_S,
    Placement,
    PlacementStrategy,
    RoomInfo,
    Scope,
    ValidationError,
    canonical_json,
    is_valid_room_id,
    selectors_from_json,
)

from ._paging import decode_cursor, parse_limit

__all__ = [
    "CreateRoom",
    "RoomFilter",
    "SeatBody",
    "capacity_params",
    "create_room_body",
    "page_params",
    "room_filter",
    "seat_body",
    "token_body",
]

_BODY_KEYS: Final = frozenset({"type", "roomId", "placement", "options"})
_SEAT_KEYS: Final = frozenset({"type", "seats", "metadata", "placement", "create", "ttlMs"})
_TOKEN_KEYS: Final = frozenset({"scope", "ttlS"})
_AGENT_TOKEN_KEYS: Final = frozenset({"name", "labels", "ttlS"})
DEFAULT_TOKEN_TTL_S: Final = 3600
_PLACEMENT_KEYS: Final = frozenset(
    {"instanceId", "processUid", "strategy", "labels", "force", "selectors"}
)
_STRATEGIES: Final[tuple[PlacementStrategy, ...]] = get_args(PlacementStrategy)

Query = MultiMapping[str]


@dataclass(frozen=True, slots=True)
class RoomFilter:
    type: str | None = None
    instance_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)  # key -> value as given
    min_free_seats: int | None = None
    locked: bool | None = None

    @property
    def empty(self) -> bool:
        return (
            self.type is None
            and self.instance_id is None
            and not self.labels
            and not self.metadata
            and self.min_free_seats is None
            and self.locked is None
        )

    def keeps(self, room: RoomInfo) -> bool:
        """The room filters beyond type, instance and labels (CONTRACT §11)."""
        if self.locked is not None and room.locked != self.locked:
            return False
        if self.min_free_seats is not None:
            free = room.free_seats
            if free is not None and free < self.min_free_seats:
                return False
        for key, wanted in self.metadata.items():
            if key not in room.metadata:
                return False
            value = room.metadata[key]
            if value != wanted and canonical_json(value) != wanted:
                return False
        return True


@dataclass(frozen=True, slots=True)
class CreateRoom:
    type: str
    room_id: str | None
    placement: Placement | None
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SeatBody:
    type: str
    seats: int
    metadata: Mapping[str, Any] | None
    placement: Placement | None
    create: Mapping[str, Any] | None
    ttl_ms: int


def _single(query: Query, name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise ValidationError(f"{name} may be given once")
    return values[0] if values else None


def page_params(query: Query) -> tuple[int | None, str | None]:
    """``limit`` (1–10,000) and ``cursor`` (only with ``limit``), both checked here."""
    limit_text = _single(query, "limit")
    cursor = _single(query, "cursor")
    limit = parse_limit(limit_text) if limit_text is not None else None
    if cursor is not None:
        if limit is None:
            raise ValidationError("cursor needs limit")
        decode_cursor(cursor)
    return limit, cursor


def room_filter(query: Query) -> RoomFilter:
    """``type`` and ``instanceId`` (exact; empty means not given) and ``label=k:v``
    (repeatable, split at the first ``:``, key non-empty, later duplicates win)."""
    return RoomFilter(
        type=_single(query, "type") or None,
        instance_id=_single(query, "instanceId") or None,
        labels=_pairs(query, "label"),
        metadata=_pairs(query, "metadata"),
        min_free_seats=_count_param(query, "minFreeSeats"),
        locked=_bool_param(query, "locked"),
    )


def capacity_params(query: Query) -> tuple[str | None, str | None]:
    """``groupBy`` (a label name) and ``type`` of ``GET /v1/capacity``; empty = absent."""
    return _single(query, "groupBy") or None, _single(query, "type") or None


def _pairs(query: Query, name: str) -> dict[str, str]:
    """``name=k:v`` (repeatable, split at the first ``:``, key non-empty, later wins)."""
    pairs: dict[str, str] = {}
    for item in query.getall(name, []):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ValidationError(f"{name} must be key:value")
        pairs[key] = value
    return pairs


def _count_param(query: Query, name: str) -> int | None:
    text = _single(query, name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 7:
        raise ValidationError(f"{name} must be an integer from 0 to 9999999")
    return int(text)


def _bool_param(query: Query, name: str) -> bool | None:
    text = _single(query, name)
    if text is None:
        return None
    if text not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false")
    return text == "true"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every body (``json.loads`` with an option builds one per call).
# ``NaN`` and ``Infinity`` are not JSON; a byte-order mark fails the parse either way.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _optional_str(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a non-empty string")
    return value


def _placement(value: Any) -> Placement | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("placement must be an object")
    unknown = set(value) - _PLACEMENT_KEYS
    if unknown:
        raise ValidationError("placement has unknown keys")
    strategy = value.get("strategy")
    if strategy is None:
        strategy = "least-loaded"
    if strategy not in _STRATEGIES:
        raise ValidationError("placement strategy must be least-loaded, most-loaded or random")
    labels = value.get("labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValidationError("placement labels must map strings to strings")
    force = value.get("force")
    if force is None:
        force = False
    if not isinstance(force, bool):
        raise ValidationError("placement force must be a boolean")
    selectors = value.get("selectors")
    return Placement(
        instance_id=_optional_str(value, "instanceId", "placement instanceId"),
        process_uid=_optional_str(value, "processUid", "placement processUid"),
        strategy=next(s for s in _STRATEGIES if s == strategy),
        labels=labels,
        force=force,
        selectors=selectors_from_json(selectors) if selectors is not None else (),
    )


def _json_object_body(body: bytes, content_type: str, keys: frozenset[str]) -> dict[str, Any]:
    if content_type != "application/json":
        raise ValidationError("content type must be application/json")
    try:
        value = _DECODER.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValidationError("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValidationError("body must be a JSON object")
    if set(value) - keys:
        raise ValidationError("body has unknown keys")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object")
    return value


def create_room_body(body: bytes, content_type: str) -> CreateRoom:
    """The ``POST /v1/rooms`` body: ``{type, roomId?, placement?, options?}``; ``null`` =
    absent."""
    value = _json_object_body(body, content_type, _BODY_KEYS)
    room_type = _optional_str(value, "type", "type")
    if room_type is None:
        raise ValidationError("type is required")
    room_id = value.get("roomId")
    if room_id is not None and (not isinstance(room_id, str) or not is_valid_room_id(room_id)):
        raise ValidationError("roomId must match ^[A-Za-z0-9_-]{1,64}$")
    return CreateRoom(
        room_type,
        room_id,
        _placement(value.get("placement")),
        _object(value.get("options"), "options"),
    )


def seat_body(body: bytes, content_type: str) -> SeatBody:
    """The ``POST /v1/seats`` body (CONTRACT §11); ranges are checked by the fleet."""
    value = _json_object_body(body, content_type, _SEAT_KEYS)
    room_type = _optional_str(value, "type", "type")
    if room_type is None:
        raise ValidationError("type is required")
    seats = value.get("seats")
    ttl_ms = value.get("ttlMs")
    return SeatBody(
        type=room_type,
        seats=1 if seats is None else seats,
        metadata=_object(value.get("metadata"), "metadata"),
        placement=_placement(value.get("placement")),
        create=_object(value.get("create"), "create"),
        ttl_ms=30_000 if ttl_ms is None else ttl_ms,
    )


def token_body(body: bytes, content_type: str) -> tuple[Scope, int]:
    """The ``POST /v1/tokens`` body (CONTRACT §12): ``{scope, ttlS?}`` → (scope, ttl s)."""
    value = _json_object_body(body, content_type, _TOKEN_KEYS)
    scope = value.get("scope")
    if scope not in ("read", "admin"):
        raise ValidationError("scope must be read or admin")
    ttl = value.get("ttlS")
    if ttl is None:
        ttl = DEFAULT_TOKEN_TTL_S
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise ValidationError(f"ttlS must be an integer from {MIN_TTL_S} to {MAX_TTL_S}")
    return Scope(scope), ttl


@dataclass(frozen=True, slots=True)
class AgentTokenBody:
    name: str | None
    labels: Mapping[str, str] | None
    ttl_s: int | None


def agent_token_body(body: bytes, content_type: str) -> AgentTokenBody:
    """The ``POST /v1/agent-tokens`` body (CONTRACT §13): ``{name?, labels?, ttlS?}``;
    the types here, the limits where tokens are minted. No body at all: the defaults."""
    value = _json_object_body(body, content_type, _AGENT_TOKEN_KEYS) if body else {}
    name = value.get("name")
    if name is not None and not isinstance(name, str):
        raise ValidationError("name must be a string")
    labels = _object(value.get("labels"), "labels")
    if labels is not None and not all(isinstance(v, str) for v in labels.values()):
        raise ValidationError("labels must be an object of strings")
    ttl = value.get("ttlS")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
        raise ValidationError("ttlS must be an integer")
    return AgentTokenBody(name, labels, ttl)
