"""The poll conversation and liveness over real sockets (SPEC §3.3, §3.4; catalogue 11–18)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from fleet_agent import wire
from fleet_server import ErrorCode, FleetError, Placement
from fleet_server._ids import ID_ALPHABET
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import harness, silent

H = 0.1  # heartbeat used by most tests here, seconds


def _poll_number(req_id: str) -> int:
    match = re.fullmatch(r"poll_(\d+)", req_id)
    assert match is not None, req_id
    return int(match.group(1))


async def test_join_gets_hello_with_configured_heartbeat_then_an_immediate_first_poll() -> None:
    async with harness(heartbeat_ms=7000) as h:
        agent = h.agent(auto_reply=False)
        hello = await agent.connect()
        assert hello.protocol_version == 3
        assert hello.heartbeat_ms == 7000
        assert re.fullmatch(r"i_[A-Za-z0-9_-]{16}", hello.instance_id)
        assert set(hello.instance_id[2:]) <= set(ID_ALPHABET)
        # The first poll comes at once, not one heartbeat (7 s) later.
        first = await agent.next_poll(0, timeout=3.0)
        assert not first.HasField("known_hash")
        assert first.status == "active"
        _poll_number(first.req_id)


async def test_polls_follow_the_heartbeat_one_per_tick_after_each_answer() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = h.agent()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await agent.connect()
        await agent.next_poll(5)
        # Poll k (k >= 2) is sent at the (k-1)-th tick, each tick one heartbeat apart.
        assert agent.poll_times[5] - started >= 5 * H * 0.95
        numbers = [_poll_number(p.req_id) for p in agent.polls]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        # Every reply echoed its poll's req_id, one reply per poll.
        answered = [s.req_id for s in agent.states_sent]
        assert answered == [p.req_id for p in agent.polls[: len(answered)]]
        assert all(p.status == "active" for p in agent.polls)


async def test_poll_ids_share_one_counter_across_connections_and_instance_ids_are_fresh() -> None:
    async with harness() as h:
        a = await h.join(name="a")
        b = await h.join(name="b", process_uid=a.process_uid)
        await a.next_poll(3)
        await b.next_poll(3)
        ids_a = {p.req_id for p in a.polls}
        ids_b = {p.req_id for p in b.polls}
        assert not ids_a & ids_b
        assert _poll_number(b.polls[0].req_id) > _poll_number(a.polls[0].req_id)
        assert a.instance_id != b.instance_id  # same processUid, new connection, new id


async def test_silent_instance_goes_stale_at_two_misses_and_is_evicted_at_three(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 2)})
        agent.auto_reply = False
        last_reply = agent.reply_times[-1]
        replies = len(agent.states_sent)
        code = await agent.wait_closed(timeout=5.0)
        assert code == 4008
        assert agent.close_reason == "liveness eviction"
        assert len(agent.states_sent) == replies
        stale = h.first("instance:stale")
        leave = h.first("instance:leave")
        assert stale is not None and leave is not None
        assert stale.payload.id == agent.instance_id == leave.payload.id
        assert h.types().index("instance:stale") < h.types().index("instance:leave")
        # The unanswered poll went out after the last reply; stale two ticks later,
        # evicted one tick after that (lower bounds only: sleeps never end early).
        assert stale.at - last_reply >= 2 * H * 0.95
        assert leave.at - stale.at >= H * 0.9
        assert leave.at - last_reply >= 3 * H * 0.95
        # Only one poll went unanswered: no new poll while one is outstanding.
        assert len(agent.polls) == replies + 1
        assert [r.id for r in h.of("room:destroy")] == ["r1"]
        assert h.orch.fleet.get_instance(agent.instance_id) is None
        messages = [r.getMessage() for r in caplog.records]
        assert f"instance stale instance={agent.instance_id} missed=2" in messages
        assert f"instance evicted instance={agent.instance_id} missed=3" in messages


async def test_instance_whose_first_poll_is_never_answered_is_evicted_without_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=50) as h:
        agent = h.agent(auto_reply=False)
        await agent.connect()
        assert await agent.wait_closed(timeout=5.0) == 4008
        assert len(agent.polls) == 1  # the first poll stayed outstanding throughout
        assert h.events == []  # never in the read model: no stale/leave events
        messages = [r.getMessage() for r in caplog.records]
        assert f"instance stale instance={agent.instance_id} missed=2" in messages
        assert f"instance evicted instance={agent.instance_id} missed=3" in messages


async def test_stale_instance_stays_listed_and_counted_but_leaves_strategy_placement() -> None:
    async with harness(heartbeat_ms=200) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 4)})
        stale = asyncio.Event()
        h.orch.on("instance:stale", lambda info: stale.set())
        agent.auto_reply = False
        await asyncio.wait_for(stale.wait(), 5.0)
        # Between stale (2 misses) and eviction (3) there is one full heartbeat.
        fleet = h.orch.fleet
        assert [i.id for i in fleet.instances] == [agent.instance_id]
        assert fleet.stats.instances == 1 and fleet.stats.rooms == 1
        assert fleet.stats.connections == 4
        assert fleet.get_room("r1") is not None
        with pytest.raises(FleetError) as info:
            await fleet.create_room("match")
        assert info.value.code is ErrorCode.NO_CANDIDATE
        assert agent.commands == []
        # Answer the outstanding poll late: accepted, stale cleared, placeable again.
        await agent.reply(agent.polls[-1])
        agent.auto_reply = True
        await agent.next_poll(len(agent.polls))  # a new poll: the late reply was taken
        room = await fleet.create_room("match")
        assert room.instance_id == agent.instance_id


async def test_reply_two_ticks_late_is_accepted_without_a_new_poll_and_polling_resumes() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join()
        stale = asyncio.Event()
        h.orch.on("instance:stale", lambda info: stale.set())
        agent.auto_reply = False
        polls = len(agent.polls)
        outstanding = await agent.next_poll(polls)
        await asyncio.wait_for(stale.wait(), 5.0)
        assert len(agent.polls) == polls + 1  # two ticks passed, the same poll still out
        sync_before = h.orch.fleet.get_instance(agent.instance_id).last_sync_at  # type: ignore[union-attr]
        await agent.reply(outstanding)
        agent.auto_reply = True
        await h.settle_polls(agent, count=5)  # polling resumed; five more ticks
        assert not agent.closed.is_set()
        assert h.of("instance:leave") == []
        info = h.orch.fleet.get_instance(agent.instance_id)
        assert info is not None and info.last_sync_at >= sync_before
        assert len(h.of("instance:stale")) == 1
        assert [p.req_id for p in agent.polls].count(outstanding.req_id) == 1


async def test_reply_held_a_quarter_heartbeat_past_the_tick_keeps_the_connection() -> None:
    async with harness(heartbeat_ms=120) as h:
        agent = await h.join()
        first_id = agent.instance_id
        agent.reply_delay = 0.15  # 1.25 H late, twice in a row
        await h.settle_polls(agent, count=2)
        agent.reply_delay = 0.0
        await h.settle_polls(agent, count=3)
        assert not agent.closed.is_set()
        assert agent.instance_id == first_id
        assert h.orch.fleet.get_instance(first_id) is not None
        assert h.of("instance:leave") == []


async def test_forced_full_polls_are_1_13_and_25_and_others_carry_the_applied_hash() -> None:
    async with harness(heartbeat_ms=50) as h:
        agent = await h.connect()
        await agent.next_poll(25, timeout=10.0)
        digest = agent.snapshot_hash()
        for number, poll in enumerate(agent.polls[:26], start=1):
            if number in (1, 13, 25):
                assert not poll.HasField("known_hash"), number
            else:
                assert poll.HasField("known_hash"), number
                assert poll.known_hash == digest, number
        # The agent answers forced polls in full and the others hash-only.
        fulls = [n for n, s in enumerate(agent.states_sent[:25], start=1) if s.full]
        assert fulls == [1, 13, 25]


async def test_eviction_fails_a_pending_create_at_once_long_before_its_timeout() -> None:
    async with harness(heartbeat_ms=100, command_timeout_ms=100_000) as h:
        agent = await h.join()
        agent.on_command = silent
        agent.auto_reply = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(FleetError) as info:
            await asyncio.wait_for(h.orch.fleet.create_room("match", room_id="doomed"), 10.0)
        assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
        assert "liveness eviction" in str(info.value)
        assert loop.time() - started < 10.0  # evicted after 3 misses, not at 100 s
        assert [c.room_id for c in agent.commands] == ["doomed"]
        assert await agent.wait_closed() == 4008
        # The create was sent, so its id is held for the process (CONTRACT §9) …
        other = await h.join(name="other")
        with pytest.raises(FleetError) as taken:
            await h.orch.fleet.create_room("match", room_id="doomed")
        assert taken.value.code is ErrorCode.ROOM_EXISTS
        # … until the process reports without it: then it is free on another instance.
        await h.join(process_uid=agent.process_uid)
        room = await h.orch.fleet.create_room(
            "match", room_id="doomed", placement=Placement(instance_id=other.instance_id)
        )
        assert room.instance_id == other.instance_id


async def test_failing_poll_send_in_the_timer_is_logged_and_becomes_misses(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    try:
        async with harness(heartbeat_ms=100) as h:
            agent = await h.join()
            link = h.link(agent)
            original = link.send_encoded

            async def failing(data: bytes) -> None:
                if wire.decode_frame(data).WhichOneof("body") == "poll":
                    raise RuntimeError("poll transport broke")
                await original(data)

            monkeypatch.setattr(link, "send_encoded", failing)
            polls = len(agent.polls)
            stale = asyncio.Event()
            h.orch.on("instance:stale", lambda info: stale.set())
            await asyncio.wait_for(stale.wait(), 5.0)
            assert len(agent.polls) == polls  # nothing reached the agent
            assert await agent.wait_closed() == 4008  # the misses went on to eviction
            failures = [r for r in caplog.records if r.getMessage().startswith("poll send failed")]
            assert len(failures) == 1
            assert agent.instance_id in failures[0].getMessage()
    finally:
        loop.set_exception_handler(None)
    assert loop_errors == []


async def test_exception_while_applying_a_snapshot_is_logged_and_the_socket_kept(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.ERROR, logger="fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join()
        read = h.orch.fleet._read
        calls: list[str] = []

        def exploding(*args: Any, **kwargs: Any) -> Any:
            calls.append("apply")
            raise RuntimeError("apply exploded")

        monkeypatch.setattr(read, "apply_snapshot", exploding)
        agent.rooms["new"] = RawRoom("match", 1)
        await wait_for(lambda: len(calls) >= 2)
        assert any(
            r.getMessage() == f"snapshot apply failed instance={agent.instance_id}"
            for r in caplog.records
        )
        assert h.orch.fleet.get_room("new") is None
        monkeypatch.undo()
        await wait_for(lambda: h.orch.fleet.get_room("new") is not None)
        assert not agent.closed.is_set()


async def test_hash_only_reply_moves_only_last_sync_and_a_changed_full_reply_applies() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 3)})
        fleet = h.orch.fleet
        before = fleet.get_instance(agent.instance_id)
        assert before is not None
        state_hash = fleet.state_hash
        fulls = sum(s.full for s in agent.states_sent)
        await wait_for(
            lambda: fleet.get_instance(agent.instance_id).last_sync_at > before.last_sync_at  # type: ignore[union-attr]
        )
        after = fleet.get_instance(agent.instance_id)
        assert after is not None
        assert sum(s.full for s in agent.states_sent) == fulls  # only hash-only replies
        assert after.to_dict() | {"lastSyncAt": 0} == before.to_dict() | {"lastSyncAt": 0}
        assert fleet.state_hash == state_hash
        assert h.of("sync")[-1].state_hash == state_hash

        agent.rooms["r2"] = RawRoom("match", 2)
        changed = agent.snapshot_hash()
        await wait_for(lambda: fleet.get_room("r2") is not None)
        assert fleet.get_instance(agent.instance_id).connections == 5  # type: ignore[union-attr]
        assert fleet.state_hash != state_hash
        await wait_for(
            lambda: any(p.known_hash == changed for p in agent.polls if p.HasField("known_hash"))
        )


async def test_last_sync_at_is_the_receive_time_of_the_accepted_reply() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = h.agent(auto_reply=False)
        await agent.connect()
        poll = await agent.next_poll(0)
        low = int(time.time() * 1000)
        await agent.reply(poll)
        await h.joined(agent)
        high = int(time.time() * 1000)
        info = h.orch.fleet.get_instance(agent.instance_id)
        assert info is not None and low <= info.last_sync_at <= high
