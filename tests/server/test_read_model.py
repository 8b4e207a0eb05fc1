"""The read model through real agents: shapes, listing order, filters, stateHash, seq,
caching and same-name agents (SPEC §1, §2, §4; catalogue 24–29)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fleet_server import Capacity, _read_model
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import Harness, harness

EMPTY_FLEET_HASH = "4f53cda18c2baa0c"


def _fixed_ids(monkeypatch: pytest.MonkeyPatch, ids: list[str]) -> None:
    """Make the transport mint ``ids`` in order for the next connections."""
    source: Iterator[str] = iter(ids)
    monkeypatch.setattr("fleet_server._transport.mint_instance_id", lambda: next(source))


async def test_instance_sums_room_connections_copies_endpoint_and_marks_local_by_origin() -> None:
    async with harness() as h:
        agent = await h.join(
            name="eu1",
            endpoint_url="wss://eu1.example:7000/game",
            labels={"region": "eu"},
            room_types=["match", "lobby"],
            max_rooms=0,
            rooms={
                "a": RawRoom("match", 3, "fleet"),
                "b": RawRoom("lobby", 5, "local"),
                "c": RawRoom("match", 0, ""),
            },
        )
        info = h.orch.fleet.get_instance(agent.instance_id)
        assert info is not None
        assert info.connections == 8
        assert info.name == "eu1" and info.process_uid == agent.process_uid
        assert info.room_types == ("lobby", "match")
        assert info.capacity == Capacity(None, 0)  # absent = unlimited, 0 kept
        assert info.to_dict()["capacity"] == {"maxConnections": None, "maxRooms": 0}
        assert info.auto_create is True and info.status == "active"
        assert info.agent_version == "1.0.0" and info.protocol_version == 3
        assert [(r.id, r.connections, r.local) for r in info.rooms] == [
            ("a", 3, False),
            ("b", 5, True),
            ("c", 0, True),  # empty origin means local
        ]
        for room in info.rooms:
            assert room.endpoint_url == "wss://eu1.example:7000/game"
            assert room.instance_id == agent.instance_id
            assert h.orch.fleet.get_room(room.id) == room
        stats = h.orch.fleet.stats
        assert (stats.instances, stats.rooms, stats.connections) == (1, 3, 8)


async def test_endpoint_change_is_copied_into_every_room() -> None:
    async with harness() as h:
        agent = await h.join(endpoint_url="wss://old.example", rooms={"r": RawRoom("match", 1)})
        agent.endpoint_url = "wss://new.example"
        await wait_for(
            lambda: h.orch.fleet.get_room("r").endpoint_url == "wss://new.example"  # type: ignore[union-attr]
        )
        assert h.orch.fleet.rooms[0].endpoint_url == "wss://new.example"


async def test_stats_room_types_are_the_sorted_union_including_instances_without_rooms() -> None:
    async with harness() as h:
        await h.join(room_types=["match", "lobby"], rooms={"m": RawRoom("match", 1)})
        await h.join(room_types=["duel"])
        assert h.orch.fleet.stats.room_types == ("duel", "lobby", "match")


async def test_instances_are_listed_in_first_applied_snapshot_order_not_accept_order() -> None:
    async with harness() as h:
        early = h.agent(name="early", auto_reply=False, rooms={"e": RawRoom("match")})
        await early.connect()
        late = await h.join(name="late", rooms={"l": RawRoom("match")})
        assert h.orch.fleet.get_instance(early.instance_id) is None  # accepted, not joined
        early.auto_reply = True
        await early.reply(early.polls[-1])
        await h.joined(early)
        assert [i.id for i in h.orch.fleet.instances] == [late.instance_id, early.instance_id]
        assert [r.id for r in h.orch.fleet.rooms] == ["l", "e"]
        joins = [i.id for i in h.of("instance:join")]
        assert joins == [late.instance_id, early.instance_id]


async def test_rooms_of_an_instance_are_listed_by_raw_id_not_public_id() -> None:
    async with harness() as h:
        # Raw order: "a_" (0x5f) < "a~" (0x7e); public order would be "a%7E" < "a_".
        agent = await h.join(rooms={"a~": RawRoom("match"), "a_": RawRoom("match")})
        info = h.orch.fleet.get_instance(agent.instance_id)
        assert info is not None
        assert [r.id for r in info.rooms] == ["a_", "a%7E"]
        assert [r.id for r in h.orch.fleet.rooms] == ["a_", "a%7E"]


async def test_teardown_drops_the_instance_and_its_rooms_and_repeating_it_is_a_no_op() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 3), "r2": RawRoom("match", 5)})
        keep = await h.join(name="keep", rooms={"k": RawRoom("match", 1)})
        link = h.link(agent)
        instance = link.instance
        await agent.close()
        await wait_for(lambda: h.orch.fleet.get_instance(agent.instance_id) is None)
        fleet = h.orch.fleet
        assert fleet.get_room("r1") is None and fleet.get_room("r2") is None
        assert (fleet.stats.instances, fleet.stats.rooms, fleet.stats.connections) == (1, 1, 1)
        events = len(h.events)
        state_hash = fleet.state_hash
        link.teardown("again")
        assert fleet._read.remove(instance) == []
        assert len(h.events) == events
        assert fleet.state_hash == state_hash
        assert [i.id for i in fleet.instances] == [keep.instance_id]


async def test_find_rooms_filters_by_type_instance_labels_and_type_with_labels() -> None:
    async with harness() as h:
        eu = await h.join(
            labels={"region": "eu", "tier": "premium"},
            room_types=["match", "lobby"],
            rooms={"eu-m": RawRoom("match", 1), "eu-l": RawRoom("lobby", 2)},
        )
        us = await h.join(
            labels={"region": "us"},
            room_types=["match"],
            rooms={"us-m": RawRoom("match", 3)},
        )
        fleet = h.orch.fleet

        def ids(rooms: list[Any]) -> list[str]:
            return [r.id for r in rooms]

        assert ids(fleet.find_rooms()) == ["eu-l", "eu-m", "us-m"]
        assert ids(fleet.find_rooms(type="match")) == ["eu-m", "us-m"]
        assert ids(fleet.find_rooms(instance_id=us.instance_id)) == ["us-m"]
        assert ids(fleet.find_rooms(instance_id=eu.instance_id, type="lobby")) == ["eu-l"]
        assert ids(fleet.find_rooms(labels={"region": "eu"})) == ["eu-l", "eu-m"]
        assert ids(fleet.find_rooms(labels={"region": "eu", "tier": "premium"})) == [
            "eu-l",
            "eu-m",
        ]
        assert ids(fleet.find_rooms(type="match", labels={"region": "us"})) == ["us-m"]
        assert fleet.find_rooms(labels={"region": "eu", "tier": "basic"}) == []
        assert fleet.find_rooms(type="duel") == []
        assert fleet.find_rooms(instance_id="i_unknown") == []


async def test_state_hash_matches_the_spec_vectors_through_a_real_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fixed_ids(monkeypatch, ["i_1"])
    async with harness() as h:
        assert h.orch.fleet.state_hash == EMPTY_FLEET_HASH
        assert h.orch.fleet.stats.state_hash == EMPTY_FLEET_HASH
        agent = await h.join(
            name="eu1",
            process_uid="p_1",
            endpoint_url="wss://eu1",
            labels={"region": "eu"},
            max_rooms=10,
            room_types=["match"],
            rooms={"r1": RawRoom("match", 3, "fleet")},
        )
        assert agent.instance_id == "i_1"
        assert agent.snapshot_hash() == "23d9d53e385c3d97"
        assert h.orch.fleet.state_hash == "00448d34db78fdb8"
        assert h.orch.fleet.stats.state_hash == "00448d34db78fdb8"
        await wait_for(lambda: h.of("sync") and h.of("sync")[-1].state_hash == "00448d34db78fdb8")
        # The orchestrator echoes the agent's hash in later polls.
        await h.applied(agent)
        assert agent.polls[-1].known_hash == "23d9d53e385c3d97"
        # Excluded from the hash: lastSyncAt (hash-only replies keep it).
        await h.settle_polls(agent, count=2)
        assert h.orch.fleet.state_hash == "00448d34db78fdb8"


async def _two_instances(h: Harness, first: dict[str, Any], second: dict[str, Any]) -> str:
    await h.join(**first)
    await h.join(**second)
    return h.orch.fleet.state_hash


async def test_state_hash_does_not_depend_on_join_order(monkeypatch: pytest.MonkeyPatch) -> None:
    a = {"name": "a", "process_uid": "p_a", "rooms": {"ra": RawRoom("match", 1)}}
    b = {"name": "b", "process_uid": "p_b", "rooms": {"rb": RawRoom("match", 2)}}
    _fixed_ids(monkeypatch, ["i_a", "i_b", "i_b", "i_a"])
    async with harness() as h:
        forward = await _two_instances(h, a, b)
        assert [i.id for i in h.orch.fleet.instances] == ["i_a", "i_b"]
    async with harness() as h:
        backward = await _two_instances(h, b, a)
        assert [i.id for i in h.orch.fleet.instances] == ["i_b", "i_a"]
    assert forward == backward


async def test_state_hash_moves_with_counts_rooms_status_and_capacity_only() -> None:
    async with harness(heartbeat_ms=60) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 1)})
        fleet = h.orch.fleet
        seen = {fleet.state_hash}

        async def changed() -> str:
            await h.applied(agent)
            digest = fleet.state_hash
            assert digest not in seen
            seen.add(digest)
            return digest

        # Quiet replies move lastSyncAt but never the hash.
        quiet = fleet.state_hash
        synced = fleet.get_instance(agent.instance_id).last_sync_at  # type: ignore[union-attr]
        await wait_for(
            lambda: fleet.get_instance(agent.instance_id).last_sync_at > synced  # type: ignore[union-attr]
        )
        assert fleet.state_hash == quiet

        agent.rooms["r1"].connections = 2
        await changed()
        agent.rooms["r2"] = RawRoom("match", 0)
        await changed()
        agent.status = "draining"
        await changed()
        agent.max_connections = 50
        await changed()
        agent.max_rooms = 0
        await changed()
        agent.labels = {"region": "eu"}
        await changed()


async def test_full_snapshot_with_an_older_or_equal_seq_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=60) as h:
        agent = h.agent(auto_reply=False)
        await agent.connect()
        poll = await agent.next_poll(0)
        agent.seq = 2
        first = await agent.reply(poll, full=True)  # seq 3, applied
        assert first.seq == 3
        await h.joined(agent)
        fleet = h.orch.fleet
        synced = fleet.get_instance(agent.instance_id).last_sync_at  # type: ignore[union-attr]
        state_hash = fleet.state_hash
        events = len(h.events)

        agent.rooms["r2"] = RawRoom("match", 4)
        for seq in (2, 3):  # older, then equal
            poll = await agent.next_poll(len(agent.polls))
            assert poll.known_hash == first.hash  # still the last applied hash
            agent.seq = seq - 1
            await agent.reply(poll, full=True)
            await wait_for(
                lambda seq=seq: any(  # type: ignore[misc]
                    r.getMessage()
                    == f"snapshot dropped instance={agent.instance_id} seq={seq} last_applied=3"
                    for r in caplog.records
                )
            )
            assert fleet.get_room("r2") is None
            assert fleet.get_instance(agent.instance_id).last_sync_at == synced  # type: ignore[union-attr]
            assert fleet.state_hash == state_hash
            assert len(h.events) == events

        poll = await agent.next_poll(len(agent.polls))
        agent.seq = 3
        await agent.reply(poll, full=True)  # seq 4: applied
        await wait_for(lambda: fleet.get_room("r2") is not None)
        # Hash-only replies are not seq-checked.
        poll = await agent.next_poll(len(agent.polls))
        assert poll.known_hash == agent.snapshot_hash()
        synced = fleet.get_instance(agent.instance_id).last_sync_at  # type: ignore[union-attr]
        await asyncio.sleep(0.002)  # lastSyncAt has millisecond resolution
        agent.seq = 0
        await agent.reply(poll, full=False)  # seq 1
        await wait_for(
            lambda: fleet.get_instance(agent.instance_id).last_sync_at > synced  # type: ignore[union-attr]
        )
        assert sum("snapshot dropped" in r.getMessage() for r in caplog.records) == 2

        # A new connection of the same process starts again at seq 1.
        again = await h.join(process_uid=agent.process_uid, rooms={"x": RawRoom("match")})
        assert again.states_sent[0].seq == 1
        assert fleet.get_room("x") is not None


async def test_reads_reuse_one_hash_and_resolution_per_applied_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 1)})
        fleet = h.orch.fleet
        read = fleet._read
        hashes: list[str] = []
        resolutions: list[str] = []
        real_hash = _read_model.SyncJob.hexdigest
        real_resolve = read._resolve

        def counting_hash(job: _read_model.SyncJob) -> str:
            digest = real_hash(job)
            hashes.append(digest)
            return digest

        def counting_resolve(base: str, claimants: list[Any]) -> None:
            resolutions.append(base)
            real_resolve(base, claimants)

        monkeypatch.setattr(_read_model.SyncJob, "hexdigest", counting_hash)
        monkeypatch.setattr(read, "_resolve", counting_resolve)

        def read_everything(times: int = 50) -> None:
            for _ in range(times):
                assert fleet.stats.instances == 1
                assert fleet.state_hash
                assert fleet.instances and fleet.rooms
                assert fleet.get_room("r1") is not None
                assert fleet.get_instance(agent.instance_id) is not None
                assert fleet.find_rooms(type="match")

        read_everything()
        await h.settle_polls(agent, count=3)  # hash-only replies
        read_everything()
        assert (hashes, resolutions) == ([], [])

        # A stale mark (two missed polls, then a late answer) recomputes nothing.
        # Reads happen inside the stale listener, while the instance is stale.
        stale = asyncio.Event()

        def on_stale(info: Any) -> None:
            read_everything()
            stale.set()

        h.orch.on("instance:stale", on_stale)
        agent.auto_reply = False
        await asyncio.wait_for(stale.wait(), 5.0)
        await agent.reply(agent.polls[-1])

        # A dropped snapshot (stale seq) recomputes nothing either.
        agent.rooms["r2"] = RawRoom("match", 2)
        poll = await agent.next_poll(len(agent.polls))
        saved_seq = agent.seq
        agent.seq = 0
        await agent.reply(poll, full=True)
        poll = await agent.next_poll(len(agent.polls))  # the dropped reply was handled
        read_everything()
        assert (hashes, resolutions) == ([], [])
        assert fleet.get_room("r2") is None

        # An applied snapshot with one new room: one hash, one resolution, however many reads.
        agent.seq = saved_seq
        await agent.reply(poll, full=True)
        await wait_for(lambda: read.room("r2") is not None)
        read_everything()
        assert len(hashes) == 1
        assert resolutions == ["r2"]
        agent.auto_reply = True


async def test_second_instance_with_a_live_name_and_other_process_logs_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=60) as h:
        first = await h.join(name="eu1")
        second = await h.join(name="eu1")
        shared = [r.getMessage() for r in caplog.records if "name" in r.getMessage()]
        assert len(shared) == 1
        assert first.instance_id in shared[0] and second.instance_id in shared[0]
        # Later snapshots of either do not repeat it.
        second.rooms["r"] = RawRoom("match", 1)
        await h.applied(second)
        assert len([r for r in caplog.records if "name" in r.getMessage()]) == 1
        assert len(h.orch.fleet.instances) == 2  # same-name agents are allowed


async def test_same_name_from_the_same_process_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness() as h:
        first = await h.join(name="eu1")
        await h.join(name="eu1", process_uid=first.process_uid)  # a reconnect overlap
        assert [r for r in caplog.records if "name" in r.getMessage()] == []


async def test_same_name_warning_still_names_a_live_holder_after_the_first_holder_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness() as h:
        first = await h.join(name="eu1")
        second = await h.join(name="eu1")
        await first.close()
        await wait_for(lambda: h.orch.fleet.get_instance(first.instance_id) is None)
        caplog.clear()
        third = await h.join(name="eu1")
        # ``second`` is live, named eu1, with another processUid: one warning naming both.
        shared = [r.getMessage() for r in caplog.records if "name" in r.getMessage()]
        assert len(shared) == 1, shared
        assert third.instance_id in shared[0] and second.instance_id in shared[0]


async def test_last_sync_at_advances_with_every_accepted_reply_in_reads() -> None:
    async with harness(heartbeat_ms=50) as h:
        agent = await h.join()
        fleet = h.orch.fleet
        stamps: list[int] = []
        for _ in range(3):
            await h.settle_polls(agent, count=1)
            info = fleet.get_instance(agent.instance_id)
            assert info is not None
            stamps.append(info.last_sync_at)
        assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
        assert stamps[-1] <= int(time.time() * 1000)
