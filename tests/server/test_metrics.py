"""The metrics' parts on their own: batched histograms, the room-type cap, the census
cache and the loop-lag probe (docs/tokens-and-metrics.md §2)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from fleet_server import RoomInfo
from fleet_server._metrics import (
    NULL_METER,
    OTHER_TYPE,
    LoopLag,
    Tally,
    _Census,
    capped,
)
from tests.support.raw_agent import RawRoom


def room(room_id: str, room_type: str, reserved: int = 0) -> RoomInfo:
    return RoomInfo(room_id, room_type, 1, "i_1", "ws://x", False, reserved_seats=reserved)


def test_a_tally_folds_observations_into_cumulative_buckets() -> None:
    tally = Tally((0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.05, 0.5, 2.0, 3.0):
        tally.observe(value)
    buckets, total = tally.buckets()
    assert buckets == [("0.01", 2), ("0.1", 3), ("1.0", 4), ("+Inf", 6)]
    assert abs(total - 5.565) < 1e-9
    for _ in range(5000):  # past the batch size: folded on the way
        tally.observe(0.02)
    buckets, _ = tally.buckets()
    assert buckets[-1] == ("+Inf", 5006) and buckets[1] == ("0.1", 5003)


def test_room_types_beyond_the_cap_add_up_under_one_label() -> None:
    types = Counter({f"t{i:03d}": i + 1 for i in range(105)})
    rows = list(capped(types, limit=100))
    assert len(rows) == 101
    assert rows[0] == ("t104", 105)  # most rooms first
    assert rows[-1] == (OTHER_TYPE, sum(range(1, 6)))
    assert list(capped(Counter({"a": 1, "b": 1}))) == [("a", 1), ("b", 1)]


def test_the_census_counts_and_recounts_only_changed_instances() -> None:
    census = _Census()
    rooms = (room("a", "match", 2), room("b", "lobby"), room("c", "match"))
    first = ("i_1", "active", 3, rooms)
    statuses, types, connections, reserved = census.count([first, ("i_2", "stale", 0, ())])
    assert statuses == {"active": 1, "draining": 0, "stale": 1}
    assert types == Counter({"match": 2, "lobby": 1})
    assert (connections, reserved) == (3, 2)
    cached = census._rooms["i_1"][1]
    census.count([first])
    assert census._rooms["i_1"][1] is cached  # same rooms tuple: not recounted
    assert "i_2" not in census._rooms  # gone instances are forgotten
    _, types, _, _ = census.count([("i_1", "draining", 1, rooms[:1])])
    assert types == Counter({"match": 1})


async def test_the_census_rows_keep_their_rooms_tuple_across_hash_only_polls() -> None:
    from tests.support.agents import RawAgents
    from tests.support.orchestrators import running_orchestrator

    async with running_orchestrator(heartbeat_ms=50) as orch, RawAgents(orch) as agents:
        await agents.join(name="eu1", rooms={"r1": RawRoom("match", 2)})
        ((_, status, connections, rooms),) = orch.fleet.census()
        assert (status, connections, [r.id for r in rooms]) == ("active", 2, ["r1"])
        await asyncio.sleep(0.2)  # a few hash-only polls move lastSyncAt only
        ((_, _, _, again),) = orch.fleet.census()
        assert again is rooms


async def test_the_loop_lag_probe_sees_a_blocked_loop() -> None:
    lag = LoopLag(period_s=0.02, window_s=1.0)
    lag.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - the loop is held on purpose
        await asyncio.sleep(0.05)
        assert lag.seconds >= 0.15
    finally:
        await lag.stop()
    await lag.stop()  # twice is harmless


def test_the_null_meter_accepts_every_report() -> None:
    NULL_METER.poll_rtt(0.1)
    NULL_METER.http_request("/", 200)
    NULL_METER.command("create", "ok", 0.1)
    NULL_METER.kick("malformed")
    NULL_METER.eviction()
    NULL_METER.auth_failure("admin")
