"""The REST envelope (SPEC §10): ``{"status":"OK","data":…}`` or a rejection.

Success bodies carry ``data`` only when there is something to return; lists add
``count`` (and ``nextCursor`` while a page has more rows after it). Failures are
``{"status":"rejected","cause":"<CODE>"}`` built by the core's one helper, the same
the agent endpoint uses, so a 401 is byte-identical on every route. Bodies are
``application/json; charset=utf-8``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import orjson
from aiohttp import hdrs, web

from fleet_server._interfaces import ErrorCode, FleetError, RoomInfo, rejection

__all__ = [
    "NO_DATA",
    "encode",
    "envelope",
    "found",
    "json_body",
    "json_headers",
    "ok",
    "rejected",
    "room_body",
]

JSON_TYPE: Final = "application/json"
_JSON_HEADERS: Final[dict[str, str]] = {hdrs.CONTENT_TYPE: f"{JSON_TYPE}; charset=utf-8"}


class _NoData(enum.Enum):
    NO_DATA = enum.auto()


NO_DATA: Final = _NoData.NO_DATA


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(payload: Any) -> bytes:
    """Compact JSON, the encoding of every body (the failure helper's too)."""
    return _ENCODER.encode(payload).encode()


def room_body(room: RoomInfo) -> bytes:
    """The success envelope of one room, as :func:`encode` writes it. Without metadata a
    room holds only strings, small integers, booleans and nulls, which ``orjson`` writes
    byte for byte as the standard encoder does (same escapes, no ASCII escaping), in a
    tenth of the time; with metadata (any JSON, floats included) the standard one."""
    data = room.to_dict()
    if room.metadata:
        return encode(envelope(data))
    return orjson.dumps({"status": "OK", "data": data})


def json_body(
    body: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # the header aiohttp would build from content_type and charset, given as it is
    if headers is None:
        return web.Response(body=body, status=status, headers=_JSON_HEADERS)
    return web.Response(body=body, status=status, headers=json_headers(headers))


def json_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` and the JSON ``Content-Type`` (a response's headers, kept for reuse)."""
    return {**headers, **_JSON_HEADERS}


def ok(
    data: Any = NO_DATA,
    *,
    count: int | None = None,
    next_cursor: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A success envelope."""
    return json_body(
        encode(envelope(data, count=count, next_cursor=next_cursor)),
        status=status,
        headers=headers,
    )


def envelope(
    data: Any = NO_DATA, *, count: int | None = None, next_cursor: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": "OK"}
    if data is not NO_DATA:
        payload["data"] = data
    if count is not None:
        payload["count"] = count
    if next_cursor is not None:
        payload["nextCursor"] = next_cursor
    return payload


def rejected(code: ErrorCode, headers: Mapping[str, str] | None = None) -> web.Response:
    """The failure envelope with the code's HTTP status from the one code table."""
    return rejection(code, headers)


Found = TypeVar("Found")


def found(row: Found | None, code: ErrorCode) -> Found:
    """A read's row, or its ``…_NOT_FOUND`` failure (REST and gRPC alike)."""
    if row is None:
        raise FleetError(code, code.value.lower().replace("_", " "))
    return row
