"""The create answer's fast JSON writer against the standard encoder of every body."""

from __future__ import annotations

import pytest

from fleet_server._models import build_room_info
from fleet_server._snapshot import ReportedRoom
from gateway._envelope import encode, envelope, room_body

_AWKWARD = "".join(chr(c) for c in range(0x20)) + '"\\/é€\u2028\u2029\ufeff😀\U0010ffff'


@pytest.mark.parametrize(
    "reported",
    [
        ReportedRoom("match", 0, False),
        ReportedRoom(_AWKWARD, 1_000_000, True, "", 2**31, True),
        ReportedRoom("lobby", 3, False, '{"elo":1.5e+16,"map":"harbor","n":123456789012345678901}'),
    ],
)
@pytest.mark.parametrize("room_id", ["r1", _AWKWARD])
def test_room_body_is_what_the_standard_encoder_writes(
    reported: ReportedRoom, room_id: str
) -> None:
    room = build_room_info(reported, room_id, f"i_{_AWKWARD}", f"wss://{_AWKWARD}", 7)
    assert room_body(room) == encode(envelope(room.to_dict()))
