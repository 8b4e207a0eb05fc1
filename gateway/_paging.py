"""Paging of the list reads (SPEC §10 "Paging"), shared by the REST and gRPC surfaces.

Without a limit a list read returns every row. With one it returns at most ``limit``
rows in list order, ``count`` (every matching row) and a ``next_cursor`` while rows
remain. A cursor is opaque to clients: it records the last row's position from
the fleet service's ``position`` (instance join sequence,
plus the agent-reported room id for rooms), and the next page starts strictly after
that position, so no row repeats even when rows came or went between two pages.

Bad input raises the core's ``VALIDATION`` error; each surface maps it as usual.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from fleet_server._interfaces import ValidationError

__all__ = ["MAX_LIMIT", "Page", "Position", "decode_cursor", "encode_cursor", "page", "parse_limit"]

MAX_LIMIT: Final = 10_000

Position = tuple[int, str]
Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Page(Generic[Row]):
    rows: list[Row]
    count: int  # every matching row, not just this page
    next_cursor: str | None  # None once the last row is on this page


def parse_limit(text: str) -> int:
    """A ``limit`` query value: a decimal integer from 1 to :data:`MAX_LIMIT`."""
    if not text.isascii() or not text.isdigit():
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return _checked_limit(int(text))


def _checked_limit(limit: int) -> int:
    if isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def encode_cursor(position: Position) -> str:
    text = json.dumps(list(position), separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; ``VALIDATION`` for anything :func:`encode_cursor`
    could not have written."""
    try:
        raw = cursor.encode("ascii")
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        value = json.loads(data.decode())
    except (UnicodeError, binascii.Error, ValueError):
        raise ValidationError("malformed cursor") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or isinstance(value[0], bool)
        or not isinstance(value[0], int)
        or value[0] < 0
        or not isinstance(value[1], str)
    ):
        raise ValidationError("malformed cursor")
    return (value[0], value[1])


def page(
    rows: Sequence[Row],
    position: Callable[[Row], Position],
    limit: int | None,
    cursor: str | None,
) -> Page[Row]:
    """One page of ``rows`` (a list read, in list order, so positions ascend)."""
    if limit is None:
        if cursor is not None:
            raise ValidationError("cursor needs limit")
        return Page(list(rows), len(rows), None)
    limit = _checked_limit(limit)
    start = 0
    if cursor is not None:
        start = bisect.bisect_right(rows, decode_cursor(cursor), key=position)
    chunk = list(rows[start : start + limit])
    more = start + limit < len(rows)
    return Page(chunk, len(rows), encode_cursor(position(chunk[-1])) if more else None)
