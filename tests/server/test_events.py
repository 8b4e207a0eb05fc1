"""Fleet events from real agents: order, payloads, overlays, teardown and failing
listeners (SPEC §5, §7.2, §7.3; catalogue 57–59)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_server import FleetStats, InstanceInfo, RoomInfo
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for

from .harness import harness


def _summary(events: list[Any]) -> list[tuple[str, str]]:
    """(type, id) per event; ``sync`` carries no id."""
    out = []
    for event in events:
        payload = event.payload
        out.append((event.type, "" if isinstance(payload, FleetStats) else payload.id))
    return out


async def test_first_snapshot_emits_join_then_its_rooms_then_sync() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 2), "r0": RawRoom("match", 1)})
        await wait_for(lambda: len(h.events) >= 4)
        assert _summary(h.events) == [
            ("instance:join", agent.instance_id),
            ("room:create", "r0"),
            ("room:create", "r1"),
            ("sync", ""),
        ]
        join = h.events[0].payload
        assert isinstance(join, InstanceInfo) and [r.id for r in join.rooms] == ["r0", "r1"]
        sync = h.events[-1].payload
        assert isinstance(sync, FleetStats)
        assert (sync.instances, sync.rooms, sync.connections) == (1, 2, 3)
        assert sync.state_hash == h.orch.fleet.state_hash


async def test_join_fires_on_the_first_applied_snapshot_not_on_accept() -> None:
    async with harness() as h:
        agent = h.agent(auto_reply=False)
        await agent.connect()
        await agent.next_poll(0)
        assert h.events == []
        await agent.reply(agent.polls[0])
        await h.joined(agent)
        assert h.types() == ["instance:join", "sync"]


async def test_room_changes_in_snapshots_emit_create_destroy_and_sync_only_when_needed() -> None:
    async with harness(heartbeat_ms=60) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 1)})
        fleet = h.orch.fleet

        mark = len(h.events)
        agent.rooms["r2"] = RawRoom("match", 0)
        await h.applied(agent)
        assert _summary(h.events[mark:]) == [("room:create", "r2"), ("sync", "")]

        mark = len(h.events)
        del agent.rooms["r1"]
        await h.applied(agent)
        assert _summary(h.events[mark:]) == [("room:destroy", "r1"), ("sync", "")]
        assert h.events[mark].payload.connections == 1  # the last known RoomInfo

        mark = len(h.events)
        agent.rooms["r2"].connections = 5
        await h.applied(agent)
        assert _summary(h.events[mark:]) == [("sync", "")]
        assert h.events[mark].payload.connections == 5

        mark = len(h.events)
        await h.settle_polls(agent, count=3)  # nothing changed: hash-only replies
        assert h.events[mark:] == []
        assert fleet.stats.rooms == 1


async def test_create_ack_emits_create_and_sync_at_once_and_the_confirming_snapshot_nothing() -> (
    None
):
    async with harness(heartbeat_ms=60) as h:
        agent = await h.join()
        mark = len(h.events)
        agent.auto_reply = False  # no poll is answered until the events are checked
        replies = len(agent.states_sent)
        room = await h.orch.fleet.create_room("match", room_id="fresh")
        # The sync follows in the same or a later loop callback (spaced on a busy
        # machine), still before any poll is answered.
        await wait_for(lambda: len(h.events) - mark >= 2, message=lambda: str(h.events[mark:]))
        assert _summary(h.events[mark:]) == [("room:create", "fresh"), ("sync", "")]
        assert h.events[mark].payload == room
        assert len(agent.states_sent) == replies
        agent.auto_reply = True
        answered = {s.req_id for s in agent.states_sent}
        if agent.polls and agent.polls[-1].req_id not in answered:
            await agent.reply(agent.polls[-1])
        await h.applied(agent)  # the agent's full reply listing the room
        await h.settle_polls(agent, count=2)
        assert _summary(h.events[mark:]) == [("room:create", "fresh"), ("sync", "")]

        mark = len(h.events)
        await h.orch.fleet.destroy_room("fresh")
        assert _summary(h.events[mark:]) == [("room:destroy", "fresh"), ("sync", "")]
        await h.applied(agent)
        await h.settle_polls(agent, count=2)
        assert _summary(h.events[mark:]) == [("room:destroy", "fresh"), ("sync", "")]


async def test_hash_only_reply_that_drops_an_unconfirmed_overlay_reconciles_it_away() -> None:
    # A heartbeat long enough for the create's sync to go out before the next poll drops
    # the room: a sync is only emitted for a hash that differs from the last one emitted.
    async with harness(heartbeat_ms=300) as h:
        agent = await h.join()

        async def ack_without_creating(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True)

        agent.on_command = ack_without_creating
        mark = len(h.events)
        replies = len(agent.states_sent)
        await h.orch.fleet.create_room("match", room_id="phantom")
        assert h.orch.fleet.get_room("phantom") is not None  # read-your-write overlay
        # The agent's state did not change, so its next reply is hash-only; the overlay
        # goes and the room with it.
        await wait_for(lambda: h.orch.fleet.get_room("phantom") is None)
        assert len(agent.states_sent) > replies
        assert not any(s.full for s in agent.states_sent[replies:])
        # The destroy's sync follows in a later loop callback (spaced on a busy machine).
        await wait_for(lambda: len(h.events) - mark >= 4, message=lambda: str(h.events[mark:]))
        assert _summary(h.events[mark:]) == [
            ("room:create", "phantom"),
            ("sync", ""),
            ("room:destroy", "phantom"),
            ("sync", ""),
        ]


async def test_teardown_emits_leave_then_a_destroy_per_room_then_sync() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"a": RawRoom("match", 1), "b/c": RawRoom("match", 2)})
        stay = await h.join(name="stay", rooms={"s": RawRoom("match", 1)})
        mark = len(h.events)
        await agent.close()
        await wait_for(lambda: "sync" in h.types(mark))
        assert _summary(h.events[mark:]) == [
            ("instance:leave", agent.instance_id),
            ("room:destroy", "a"),
            ("room:destroy", "b%2Fc"),
            ("sync", ""),
        ]
        leave = h.events[mark].payload
        assert isinstance(leave, InstanceInfo)
        assert [r.id for r in leave.rooms] == ["a", "b%2Fc"]  # public ids
        assert leave.connections == 3
        sync = h.events[-1].payload
        assert (sync.instances, sync.rooms) == (1, 1)
        assert h.orch.fleet.get_instance(stay.instance_id) is not None


async def test_reconnect_is_a_leave_of_the_old_id_and_a_join_of_a_new_one_same_process() -> None:
    async with harness() as h:
        old = await h.join(rooms={"r": RawRoom("match", 1)})
        await old.close()
        await wait_for(lambda: h.of("instance:leave"))
        new = await h.join(process_uid=old.process_uid, rooms={"r": RawRoom("match", 1)})
        leave = h.of("instance:leave")
        joins = h.of("instance:join")
        assert [i.id for i in leave] == [old.instance_id]
        assert [i.id for i in joins] == [old.instance_id, new.instance_id]
        assert new.instance_id != old.instance_id
        assert leave[0].process_uid == joins[1].process_uid == old.process_uid
        order = h.types()
        assert order.index("instance:leave") < len(order) - 1 - order[::-1].index("instance:join")


async def test_stale_mark_emits_stale_but_never_sync() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join()
        mark = len(h.events)
        stale = asyncio.Event()
        h.orch.on("instance:stale", lambda info: stale.set())
        agent.auto_reply = False
        await asyncio.wait_for(stale.wait(), 5.0)
        await agent.reply(agent.polls[-1])
        agent.auto_reply = True
        await h.settle_polls(agent, count=2)
        assert _summary(h.events[mark:]) == [("instance:stale", agent.instance_id)]


async def test_fleet_room_arriving_renames_a_local_room_as_destroy_plus_create() -> None:
    async with harness() as h:
        local = await h.join(name="local", process_uid="p_loc", rooms={"dup": RawRoom("match")})
        mark = len(h.events)
        fleet_side = await h.join(
            name="fleet", process_uid="p_flt", rooms={"dup": RawRoom("match", 0, "fleet")}
        )
        events = h.events[mark:]
        assert _summary(events)[0] == ("instance:join", fleet_side.instance_id)
        assert sorted(_summary(events)[1:3]) == [
            ("room:create", "dup"),
            ("room:create", "p_loc~dup"),
        ]
        assert _summary(events)[3:] == [("room:destroy", "dup"), ("sync", "")]
        destroyed = events[3].payload
        assert isinstance(destroyed, RoomInfo) and destroyed.instance_id == local.instance_id


async def test_origin_flip_that_swaps_the_keeper_destroys_each_room_by_its_old_public_id() -> None:
    async with harness(heartbeat_ms=60) as h:
        first = await h.join(name="first", process_uid="p_a", rooms={"dup": RawRoom("match")})
        second = await h.join(name="second", process_uid="p_b", rooms={"dup": RawRoom("match")})
        fleet = h.orch.fleet
        assert fleet.get_room("dup").instance_id == first.instance_id  # type: ignore[union-attr]
        assert fleet.get_room("p_b~dup").instance_id == second.instance_id  # type: ignore[union-attr]
        mark = len(h.events)
        second.rooms["dup"].origin = "fleet"  # fleet beats local: ``second`` takes ``dup``
        await h.applied(second)
        assert fleet.get_room("dup").instance_id == second.instance_id  # type: ignore[union-attr]
        assert fleet.get_room("p_a~dup").instance_id == first.instance_id  # type: ignore[union-attr]
        assert fleet.get_room("p_b~dup") is None
        events = h.events[mark:]
        destroyed = {
            (e.payload.id, e.payload.instance_id) for e in events if e.type == "room:destroy"
        }
        created = {(e.payload.id, e.payload.instance_id) for e in events if e.type == "room:create"}
        assert created == {("dup", second.instance_id), ("p_a~dup", first.instance_id)}
        assert destroyed == {("dup", first.instance_id), ("p_b~dup", second.instance_id)}


async def test_raising_listener_is_logged_and_other_listeners_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="fleet.server")
    async with harness() as h:
        after: list[str] = []
        async_after: list[str] = []

        def explode(payload: Any) -> None:
            raise RuntimeError("listener broke")

        async def explode_later(payload: Any) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("async listener broke")

        async def record_async(payload: Any) -> None:
            async_after.append(payload.id)

        h.orch.on("room:create", explode)
        h.orch.on("room:create", explode_later)
        h.orch.on("room:create", lambda room: after.append(room.id))
        h.orch.on("room:create", record_async)
        agent = await h.join(rooms={"r1": RawRoom("match")})
        await wait_for(lambda: async_after == ["r1"])
        assert after == ["r1"]
        assert h.types()[:3] == ["instance:join", "room:create", "sync"]
        await wait_for(
            lambda: (
                sum(
                    r.getMessage() == "event listener failed event=room:create"
                    for r in caplog.records
                )
                == 2
            )
        )
        # The fleet carries on: a later create still resolves and notifies.
        await h.orch.fleet.create_room("match", room_id="r2")
        assert after == ["r1", "r2"]
        assert not agent.closed.is_set()


async def test_unknown_event_type_is_refused_and_unsubscribe_stops_delivery() -> None:
    async with harness() as h:
        with pytest.raises(ValueError):
            h.orch.on("room:rename", lambda payload: None)
        seen: list[str] = []
        unsubscribe = h.orch.on("instance:join", lambda info: seen.append(info.id))
        first = await h.join()
        unsubscribe()
        unsubscribe()  # twice is harmless
        await h.join()
        assert seen == [first.instance_id]


async def test_a_sync_hashed_in_slices_carries_the_captured_state_and_a_later_one_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large fleet's sync is hashed a slice per loop callback (forced here with tiny
    slices): reads stay right meanwhile, and changes during the slices get their own sync."""
    from fleet_server import _fleet_hash, _sync

    monkeypatch.setattr(_sync, "_SLICE_BYTES", 1)
    monkeypatch.setattr(_sync, "_SLICE_S", 0.0)
    monkeypatch.setattr(_sync, "_SYNC_SPACING", 0)  # no spacing from the last sync's cost
    unfinished = 0  # slices that left a sync still hashing
    advance = _fleet_hash.SyncJob.advance

    def counted_advance(job: _fleet_hash.SyncJob, budget_bytes: int | None = None) -> bool:
        nonlocal unfinished
        done = advance(job, budget_bytes)
        unfinished += not done
        return done

    monkeypatch.setattr(_fleet_hash.SyncJob, "advance", counted_advance)
    async with harness(heartbeat_ms=60) as h:
        for n in range(6):
            await h.join(rooms={f"a{n}": RawRoom("match", n)})
        fleet = h.orch.fleet
        await wait_for(lambda: h.events[-1].type == "sync")
        assert h.events[-1].payload == fleet.stats
        mark = len(h.events)
        unfinished = 0
        await fleet.create_room("match", room_id="one")
        await fleet.create_room("match", room_id="two")
        assert fleet.get_room("one") is not None and fleet.stats.rooms == 8
        await wait_for(lambda: fleet._flusher._handle is None and not fleet._read.sync_due)
        syncs = [e.payload for e in h.events[mark:] if e.type == "sync"]
        assert syncs and syncs[-1] == fleet.stats
        assert syncs[-1].rooms == 8
        assert unfinished > 1  # hashed a slice at a time


async def test_no_sync_is_hashed_without_a_listener_and_the_next_goes_to_a_new_one() -> None:
    async with running_orchestrator(heartbeat_ms=60) as orch:
        agent = RawAgent(agent_url(orch.port), rooms={"r1": RawRoom("match", 1)})
        await agent.connect()
        try:
            fleet = orch.fleet
            await wait_for(lambda: fleet.get_room("r1") is not None)
            await fleet.create_room("match", room_id="quiet")
            assert fleet._flusher._handle is None and fleet._flusher._job is None
            assert not fleet._read.sync_due
            assert fleet.stats.rooms == 2  # reads still hash on demand
            syncs: list[FleetStats] = []
            orch.on("sync", syncs.append)
            await fleet.create_room("match", room_id="heard")
            await wait_for(lambda: bool(syncs))
            assert syncs[-1] == fleet.stats and syncs[-1].rooms == 3
        finally:
            await agent.close()
