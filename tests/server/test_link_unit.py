"""Pieces of the agent link that need no connection."""

from __future__ import annotations

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server._commands import command_message
from fleet_server._link import next_tick, poll_message


@pytest.mark.parametrize("req_id", ["poll_1", "poll_" + "9" * 200, ""])
@pytest.mark.parametrize("known_hash", [None, "", "4f53cda18c2baa0c", "h" * 300])
@pytest.mark.parametrize("status", ["active", "draining", ""])
def test_poll_message_is_the_protobuf_encoding(
    req_id: str, known_hash: str | None, status: str
) -> None:
    poll = agent_pb2.Poll(req_id=req_id, status=status)
    if known_hash is not None:
        poll.known_hash = known_hash
    expected = wire.encode_frame(agent_pb2.Frame(poll=poll))
    assert poll_message(req_id, known_hash, status) == expected
    decoded = wire.decode_frame(expected).poll
    assert decoded.HasField("known_hash") is (known_hash is not None)


@pytest.mark.parametrize("cmd_id", ["cmd_1", "cmd_" + "9" * 200])
@pytest.mark.parametrize("op", ["create", "destroy", "drain"])
@pytest.mark.parametrize("room_id", ["", "r1", "é" * 70])
@pytest.mark.parametrize("room_type", ["", "match"])
@pytest.mark.parametrize("options", ["", '{"map":"harbor"}', '{"x":"' + "y" * 4000 + '"}'])
def test_command_message_is_the_protobuf_encoding(
    cmd_id: str, op: str, room_id: str, room_type: str, options: str
) -> None:
    command = agent_pb2.Command(
        cmd_id=cmd_id, op=op, room_id=room_id, room_type=room_type, options=options
    )
    expected = wire.encode_frame(agent_pb2.Frame(cmd=command))
    assert command_message(cmd_id, op, room_id, room_type, options) == expected


@pytest.mark.parametrize(
    ("fired_at", "expected"),
    [
        (10.0, 15.0),  # on time: one heartbeat on
        (10.3, 15.0),  # late: the phase holds, the next tick does not move
        (12.4, 15.0),  # still half a heartbeat before the next one
        (12.6, 20.0),  # later: that one is skipped, not run at once
        (22.6, 30.0),  # a loop stalled for several heartbeats: one tick, then the phase
    ],
)
def test_next_tick_keeps_the_links_phase(fired_at: float, expected: float) -> None:
    assert next_tick(10.0, 5.0, fired_at) == expected
