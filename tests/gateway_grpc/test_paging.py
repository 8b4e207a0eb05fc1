"""The shared paging helper (``gateway/_paging.py``) on its own: pages, cursors, limits."""

from __future__ import annotations

import pytest

from fleet_server import ErrorCode, FleetError
from gateway._paging import MAX_LIMIT, decode_cursor, encode_cursor, page, parse_limit

ROWS = [(1, ""), (2, "a"), (2, "b~c"), (2, "é"), (5, "")]


def identity(row: tuple[int, str]) -> tuple[int, str]:
    return row


def test_without_a_limit_every_row_comes_back() -> None:
    result = page(ROWS, identity, None, None)
    assert result.rows == ROWS and result.count == 5 and result.next_cursor is None


def test_pages_walk_the_rows_once_each() -> None:
    seen: list[tuple[int, str]] = []
    cursor: str | None = None
    while True:
        result = page(ROWS, identity, 2, cursor)
        assert result.count == 5
        seen.extend(result.rows)
        cursor = result.next_cursor
        if cursor is None:
            break
    assert seen == ROWS


def test_a_page_starts_strictly_after_the_cursor_even_if_that_row_left() -> None:
    cursor = encode_cursor((2, "a"))
    remaining = [row for row in ROWS if row != (2, "a")]
    assert page(remaining, identity, 10, cursor).rows == [(2, "b~c"), (2, "é"), (5, "")]


def test_cursors_round_trip_any_room_id() -> None:
    for position in [(0, ""), (7, "p_abc~room"), (3, "caf\u00e9 \u2603/%")]:
        cursor = encode_cursor(position)
        assert cursor.isascii() and "=" not in cursor
        assert decode_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGpzb24", "WzEsMl0", "WyJ4IiwieSJd", "Wy0xLCIiXQ", "W3RydWUsIiJd", "é"],
)
def test_malformed_cursors_are_validation_errors(cursor: str) -> None:
    with pytest.raises(FleetError) as info:
        decode_cursor(cursor)
    assert info.value.code is ErrorCode.VALIDATION


@pytest.mark.parametrize(
    ("limit", "cursor"), [(0, None), (MAX_LIMIT + 1, None), (None, "WzEsIiJd")]
)
def test_bad_limits_are_validation_errors(limit: int | None, cursor: str | None) -> None:
    with pytest.raises(FleetError) as info:
        page(ROWS, identity, limit, cursor)
    assert info.value.code is ErrorCode.VALIDATION


def test_parse_limit_takes_decimal_integers_in_range() -> None:
    assert parse_limit("1") == 1 and parse_limit(str(MAX_LIMIT)) == MAX_LIMIT
    for text in ("", "0", "-1", "+5", "1.5", " 3", "10001", "\u0663", "abc"):
        with pytest.raises(ValueError):
            parse_limit(text)
