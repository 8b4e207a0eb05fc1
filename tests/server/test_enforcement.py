"""Kicks for frames that answer nothing or are not frames at all (SPEC §3.1, §3.5, §3.6;
catalogue 19–23)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server import ErrorCode, FleetError
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for

from .harness import Harness, ack, harness, silent


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log line, with any formatted traceback."""
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


async def _assert_kicked(
    h: Harness, agent: RawAgent, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Closed with ``code`` and a short reason, torn down once, kick logged by category."""
    assert await agent.wait_closed() == code
    assert agent.close_reason == "protocol violation"
    await wait_for(lambda: h.orch.fleet.get_instance(agent.instance_id) is None)
    leaves = [i.id for i in h.of("instance:leave") if i.id == agent.instance_id]
    assert leaves == [agent.instance_id]  # exactly one leave for the kicked instance
    kicks = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"kick instance={agent.instance_id} cause=")
    ]
    assert len(kicks) == 1, kicks


async def _joined_with_pending_create(h: Harness) -> tuple[RawAgent, asyncio.Task[Any]]:
    agent = await h.join(rooms={"r1": RawRoom("match", 2)})
    agent.on_command = silent
    task = asyncio.create_task(h.orch.fleet.create_room("match", room_id="pending"))
    await wait_for(lambda: len(agent.commands) == 1)
    return agent, task


async def _forge_never_issued(agent: RawAgent) -> None:
    await agent.send_frame(agent_pb2.Frame(state=agent.state("poll_999999", True)))


async def _forge_consumed(agent: RawAgent) -> None:
    await agent.send_frame(agent_pb2.Frame(state=agent.state(agent.polls[0].req_id, False)))


async def _forge_unknown(agent: RawAgent) -> None:
    await agent.send_frame(agent_pb2.Frame(state=agent.state("not-a-poll", True)))


async def _forge_empty_req_id(agent: RawAgent) -> None:
    await agent.send_frame(agent_pb2.Frame(state=agent.state("", True)))


@pytest.mark.parametrize(
    "forge",
    [_forge_never_issued, _forge_consumed, _forge_unknown, _forge_empty_req_id],
    ids=["never-issued", "consumed", "unknown", "empty"],
)
async def test_state_answering_no_outstanding_poll_kicks_with_4000_and_tears_down(
    forge: Callable[[RawAgent], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(command_timeout_ms=60_000) as h:
        agent, pending = await _joined_with_pending_create(h)
        await forge(agent)
        await _assert_kicked(h, agent, 4000, caplog)
        with pytest.raises(FleetError) as info:
            await pending
        assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
        assert "protocol violation" in str(info.value)
        assert [r.id for r in h.of("room:destroy")] == ["r1"]
        assert h.orch.fleet.stats.instances == 0
        # The reservation is gone with the instance: the id is free again.
        assert not h.orch.fleet._read.is_taken("pending")


async def test_answering_the_same_poll_twice_kicks_on_the_duplicate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness() as h:
        agent = await h.join()
        agent.auto_reply = False
        poll = await agent.next_poll(len(agent.polls))
        await agent.reply(poll)
        await agent.reply(poll)
        await _assert_kicked(h, agent, 4000, caplog)


async def test_ack_for_an_unknown_command_kicks_with_4000(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness() as h:
        agent = await h.join()
        await agent.send_frame(agent_pb2.Frame(ack=agent_pb2.Ack(cmd_id="cmd_424242", ok=True)))
        await _assert_kicked(h, agent, 4000, caplog)


async def test_duplicate_ack_kicks_and_the_command_settles_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness() as h:
        agent = await h.join()

        async def ack_twice(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            done = agent.execute(cmd)
            await agent.send_frame(agent_pb2.Frame(ack=done))
            return done  # sent again by the reader: a duplicate

        agent.on_command = ack_twice
        room = await h.orch.fleet.create_room("match", room_id="once")
        assert room.id == "once"
        await _assert_kicked(h, agent, 4000, caplog)
        assert [r.id for r in h.of("room:create")] == ["once"]


async def test_ack_after_command_timeout_kicks_without_a_second_settlement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    try:
        async with harness(heartbeat_ms=100, command_timeout_ms=150) as h:
            agent = await h.join()
            agent.on_command = silent
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room("match", room_id="late")
            assert info.value.code is ErrorCode.COMMAND_TIMEOUT
            message = str(info.value)
            assert agent.commands[0].cmd_id in message and "create" in message
            assert "150" in message  # names the timeout
            creates = len(h.of("room:create"))
            agent.execute(agent.commands[0])
            await agent.send_frame(ack(agent.commands[0], ok=True))
            await _assert_kicked(h, agent, 4000, caplog)
            assert len(h.of("room:create")) == creates  # the late ack created nothing
            assert h.orch.fleet.get_room("late") is None
    finally:
        loop.set_exception_handler(None)
    assert loop_errors == []


async def test_forged_state_and_ack_never_reach_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = "ZQXMARKER"
    async with harness(heartbeat_ms=100, command_timeout_ms=150) as h:
        forger = await h.join(name="forger")
        state = forger.state(f"{marker}-req", True)
        state.name = f"{marker}-name"
        state.endpoint_url = f"wss://{marker}.example"
        state.rooms.add(id=f"{marker}-room", type="match", connections=1, origin="local")
        await forger.send_frame(agent_pb2.Frame(state=state))
        await _assert_kicked(h, forger, 4000, caplog)

        acker = await h.join(name="acker")
        forged_ack = agent_pb2.Ack(cmd_id=f"{marker}-cmd", ok=False, error=f"{marker}-error")
        forged_ack.room.id = f"{marker}-ackroom"
        await acker.send_frame(agent_pb2.Frame(ack=forged_ack))
        await _assert_kicked(h, acker, 4000, caplog)

        # Replayed ids: an answered poll's req_id, and a timed-out command's cmd_id.
        replayer = await h.join(name="replayer")
        consumed = replayer.polls[0].req_id
        await replayer.send_frame(agent_pb2.Frame(state=replayer.state(consumed, True)))
        await _assert_kicked(h, replayer, 4000, caplog)

        late = await h.join(name="late")
        late.on_command = silent
        with pytest.raises(FleetError):
            await h.orch.fleet.create_room("match", room_id="late-room")
        timed_out = late.commands[0].cmd_id
        await late.send_frame(ack(late.commands[0], ok=True))
        await _assert_kicked(h, late, 4000, caplog)

    text = _log_text(caplog)
    assert marker not in text
    assert re.search(rf"\b{consumed}\b", text) is None
    assert re.search(rf"\b{timed_out}\b", text) is None


def _frame(**body: Any) -> bytes:
    return wire.encode_frame(agent_pb2.Frame(**body))


HOSTILE: list[tuple[str, bytes | str, int]] = [
    ("hello", _frame(hello=agent_pb2.Hello(instance_id="i_x", protocol_version=3)), 4000),
    ("poll", _frame(poll=agent_pb2.Poll(req_id="poll_1")), 4000),
    ("command", _frame(cmd=agent_pb2.Command(cmd_id="cmd_1", op="create")), 4000),
    ("empty-frame", _frame(), 4000),
    ("text", '{"state": {}}', 4002),
    ("zero-bytes", b"", 4002),
    ("one-byte", b"\x03", 4002),
    ("undecodable", b"\x03\x00\xff\xff\xff\xff", 4002),
    ("major-2", b"\x02\x00" + _frame(poll=agent_pb2.Poll())[2:], 4003),
    ("json-bytes", b'{"req_id":"poll_1"}', 4003),
    ("major-99", b"\x63\x00", 4003),
    ("over-4-MiB", b"\x03\x00" + b"\x00" * (wire.MAX_FRAME_BYTES - 1), 4004),
]


@pytest.mark.parametrize(
    ("payload", "code"), [(p, c) for _, p, c in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
async def test_hostile_input_kicks_with_its_close_code(
    payload: bytes | str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness() as h:
        agent = await h.join()
        if isinstance(payload, str):
            await agent.send_text(payload)
        else:
            await agent.send_bytes(payload)
        await _assert_kicked(h, agent, code, caplog)
        if code == 4003:
            major = payload[0] if isinstance(payload, bytes) else -1
            assert any(f"major={major} expected=3" in r.getMessage() for r in caplog.records), (
                "the wrong-major warning names both majors"
            )


def _state_frame_of_size(agent: RawAgent, req_id: str, size: int) -> bytes:
    """A valid full State frame of exactly ``size`` bytes (header included)."""
    state = agent.state(req_id, True)
    pad = size
    for _ in range(10):
        state.agent_version = "v" * pad
        data = wire.encode_frame(agent_pb2.Frame(state=state))
        if len(data) == size:
            return data
        pad -= len(data) - size
    raise AssertionError("could not pad the frame to the exact size")


async def test_frame_of_exactly_4_mib_is_accepted_and_one_byte_more_is_kicked_4004(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=200) as h:
        agent = await h.join()
        agent.auto_reply = False
        poll = await agent.next_poll(len(agent.polls))
        await agent.send_bytes(_state_frame_of_size(agent, poll.req_id, wire.MAX_FRAME_BYTES))
        await wait_for(
            lambda: (
                len(h.orch.fleet.get_instance(agent.instance_id).agent_version)  # type: ignore[union-attr]
                > 1000
            )
        )
        assert not agent.closed.is_set()
        poll = await agent.next_poll(len(agent.polls))
        await agent.send_bytes(_state_frame_of_size(agent, poll.req_id, wire.MAX_FRAME_BYTES + 1))
        await _assert_kicked(h, agent, 4004, caplog)


async def test_snapshot_failing_validation_is_logged_not_kicked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=60) as h:
        agent = await h.join(endpoint_url="wss://good.example")
        agent.endpoint_url = "javascript:alert(1)"
        await wait_for(
            lambda: any(r.getMessage().startswith("snapshot rejected") for r in caplog.records)
        )
        await h.settle_polls(agent, count=4)  # more than three ticks: no eviction either
        assert not agent.closed.is_set()
        assert h.of("instance:leave") == []
        rejected = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("snapshot rejected")
        ]
        assert rejected[0].startswith(f"snapshot rejected instance={agent.instance_id} reason=")
        assert all("javascript" not in line and "alert" not in line for line in rejected)
        assert not any(r.getMessage().startswith("kick") for r in caplog.records)
        info = h.orch.fleet.get_instance(agent.instance_id)
        assert info is not None and info.endpoint_url == "wss://good.example"
