"""Full-snapshot validation bounds (SPEC §4; catalogue 80–82)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_server._snapshot import ReportedRoom, SnapshotRejectedError, parse_snapshot
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import harness

MARK = "Q"  # padding character used in over-long values
QUOTED = MARK * 6  # a reason or log line quoting a padded value would contain this


def _state(**fields: Any) -> agent_pb2.State:
    """A clean full State; keyword overrides replace fields (``labels``/``rooms`` as given)."""
    labels = fields.pop("labels", {"region": "eu"})
    rooms = fields.pop("rooms", [("r1", "match", 3, "fleet")])
    capacity = fields.pop("capacity", (None, 10))
    base: dict[str, Any] = {
        "req_id": "poll_1",
        "full": True,
        "seq": 1,
        "hash": "0123456789abcdef",
        "name": "eu1",
        "process_uid": "p_1",
        "agent_version": "1.0.0",
        "protocol_version": 3,
        "endpoint_url": "wss://eu1.example",
        "auto_create": True,
        "room_types": ["match"],
        "status": "active",
    }
    base.update(fields)
    state = agent_pb2.State(**base)
    state.labels.update(labels)
    if capacity[0] is not None:
        state.capacity.max_connections = capacity[0]
    if capacity[1] is not None:
        state.capacity.max_rooms = capacity[1]
    for room_id, room_type, connections, origin in rooms:
        state.rooms.add(id=room_id, type=room_type, connections=connections, origin=origin)
    return state


def _reject(state: agent_pb2.State) -> str:
    with pytest.raises(SnapshotRejectedError) as info:
        parse_snapshot(state)
    reason = str(info.value)
    assert QUOTED not in reason and "javascript" not in reason and "etc/passwd" not in reason
    return reason


def _names(reason: str, field: str, limit: str) -> None:
    assert field in reason, reason
    assert re.search(limit, reason), reason


def test_clean_snapshot_passes_and_converts_every_field() -> None:
    snap = parse_snapshot(
        _state(room_types=["match", "lobby", "match"], rooms=[("r1", "match", 3, "fleet")])
    )
    assert snap.name == "eu1" and snap.process_uid == "p_1"
    assert snap.endpoint_url == "wss://eu1.example"
    assert dict(snap.labels) == {"region": "eu"}
    assert snap.room_types == ("lobby", "match")
    assert snap.max_connections is None and snap.max_rooms == 10
    assert snap.rooms["r1"].connections == 3 and snap.rooms["r1"].local is False
    assert snap.status == "active" and snap.seq == 1 and snap.hash == "0123456789abcdef"


def test_capacity_absent_is_unlimited_and_zero_is_kept() -> None:
    snap = parse_snapshot(_state(capacity=(0, None)))
    assert snap.max_connections == 0 and snap.max_rooms is None


@pytest.mark.parametrize(("origin", "local"), [("fleet", False), ("local", True), ("", True)])
def test_room_origin_sets_local(origin: str, local: bool) -> None:
    snap = parse_snapshot(_state(rooms=[("r", "match", 0, origin)]))
    assert snap.rooms["r"].local is local


@pytest.mark.parametrize(
    "url",
    [
        "ws://host",
        "wss://host.example:443/path?q=1",
        "http://10.0.0.1:8080",
        "https://[::1]:9000/",
        "wss://" + "h" * 506,  # exactly 512 chars
    ],
)
def test_each_allowed_scheme_and_a_512_char_url_pass(url: str) -> None:
    assert parse_snapshot(_state(endpoint_url=url)).endpoint_url == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "ftp://host.example",
        "ws://",
        "wss:///path-only",
        "/relative/path",
        "host.example:80",
        "",
    ],
)
def test_non_absolute_or_foreign_scheme_urls_are_rejected(url: str) -> None:
    _names(_reject(_state(endpoint_url=url)), "endpoint_url", r"")


def test_limits_pass_at_the_bound_and_fail_one_past_it() -> None:
    at_bound = _state(
        name=MARK * 64,
        room_types=[f"{i:03d}" + MARK * 61 for i in range(256)],
        labels={f"{i:02d}" + MARK * 62: MARK * 64 for i in range(32)},
        rooms=[("i" * 256, "t" * 64, 1_000_000, "local")],
    )
    parse_snapshot(at_bound)

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"endpoint_url": "wss://" + MARK * 507}, "endpoint_url", "512"),
        ({"name": MARK * 65}, "name", "64"),
        ({"room_types": [f"t{i}" for i in range(257)]}, "room_types", "256"),
        ({"room_types": ["match", MARK * 65]}, "room_types", "64"),
        ({"labels": {f"k{i}": "v" for i in range(33)}}, "labels", "32"),
        ({"labels": {MARK * 65: "v"}}, "label key", "64"),
        ({"labels": {"k": MARK * 65}}, "label value", "64"),
        ({"rooms": [(MARK * 257, "match", 0, "local")]}, "room id", "256"),
        ({"rooms": [("r", MARK * 65, 0, "local")]}, "room type", "64"),
        ({"rooms": [("r", "match", 1_000_001, "local")]}, "connections", r"1,?000,?000"),
        ({"status": "paused"}, "status", "active"),
        ({"status": ""}, "status", "active"),
        ({"rooms": [("r", "match", 0, "other")]}, "origin", "fleet"),
        ({"capacity": (-1, None)}, "capacity", "0"),
        ({"capacity": (None, -1)}, "capacity", "0"),
    ]
    for fields, field, limit in cases:
        _names(_reject(_state(**fields)), field, limit)


def test_ten_thousand_rooms_with_66_char_ids_pass() -> None:
    rooms = [(f"{i:05d}" + "x" * 61, "match", 1, "local") for i in range(10_000)]
    assert len(rooms[0][0]) == 66
    snap = parse_snapshot(_state(rooms=rooms))
    assert len(snap.rooms) == 10_000


def test_fifty_thousand_rooms_pass_and_fifty_thousand_and_one_fail() -> None:
    rooms = [(f"r{i}", "match", 0, "local") for i in range(50_001)]
    assert len(parse_snapshot(_state(rooms=rooms[:50_000])).rooms) == 50_000
    _names(_reject(_state(rooms=rooms)), "rooms", r"50,?000")


def test_the_first_failing_check_in_spec_order_is_the_reason() -> None:
    # Step 1 (lengths, in field order) before step 2 (URL shape) before 3 (labels) before 4.
    reason = _reject(_state(endpoint_url="javascript:" + MARK * 600, name=MARK * 65))
    _names(reason, "endpoint_url", "512")
    reason = _reject(_state(name=MARK * 65, room_types=["t"] * 257))
    _names(reason, "name", "64")
    reason = _reject(
        _state(
            endpoint_url="file:///x",
            rooms=[(f"r{i}", "m", 0, "local") for i in range(50_001)],
        )
    )
    _names(reason, "rooms", r"50,?000")
    reason = _reject(_state(endpoint_url="file:///x", labels={MARK * 65: "v"}))
    assert "endpoint_url" in reason
    reason = _reject(_state(labels={MARK * 65: "v"}, rooms=[("r", "match", 2_000_000, "local")]))
    _names(reason, "label key", "64")


def test_room_bounds_on_every_room_are_checked_before_the_python_additions() -> None:
    # Step 4 (id/type/connections bounds of each room) precedes step 5 (status, origin,
    # capacity): a later room's over-long id is the reason, not an earlier room's origin.
    reason = _reject(_state(rooms=[("a", "match", 0, "other"), (MARK * 257, "match", 0, "")]))
    _names(reason, "room id", "256")
    reason = _reject(_state(rooms=[("a", "match", 0, "other"), ("b", MARK * 65, 0, "")]))
    _names(reason, "room type", "64")
    reason = _reject(_state(status="paused", rooms=[("a", "match", 1_000_001, "")]))
    _names(reason, "connections", r"1,?000,?000")


async def test_bad_snapshots_keep_the_last_good_state_without_a_kick_until_a_good_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=50) as h:
        agent = await h.join(
            name="good", endpoint_url="wss://good.example", rooms={"r1": RawRoom("match", 2)}
        )
        fleet = h.orch.fleet
        good = fleet.get_instance(agent.instance_id)
        assert good is not None
        good_hash = agent.snapshot_hash()
        state_hash = fleet.state_hash

        agent.name = MARK * 65
        agent.endpoint_url = "file:///etc/passwd"
        agent.rooms["r2"] = RawRoom("match", 7)
        bad_polls = len(agent.polls)
        await h.settle_polls(agent, count=5)  # more than 3 ticks: no eviction either
        rejected = [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(f"snapshot rejected instance={agent.instance_id}")
        ]
        assert len(rejected) >= 3
        assert all(QUOTED not in line and "passwd" not in line for line in rejected)
        now = fleet.get_instance(agent.instance_id)
        assert now == good  # name, endpoint, rooms and lastSyncAt all unchanged
        assert fleet.get_room("r2") is None and fleet.state_hash == state_hash
        # Polls keep the last applied hash, so the agent keeps answering in full.
        later = agent.polls[bad_polls + 1 :]
        assert later and all(p.known_hash == good_hash for p in later if p.HasField("known_hash"))
        assert all(s.full for s in agent.states_sent[bad_polls + 1 :])
        assert not agent.closed.is_set() and h.of("instance:leave") == []

        agent.name = "fixed"
        agent.endpoint_url = "wss://fixed.example"
        await wait_for(lambda: fleet.get_room("r2") is not None)
        fixed = fleet.get_instance(agent.instance_id)
        assert fixed is not None and fixed.name == "fixed"
        assert fixed.endpoint_url == "wss://fixed.example"
        assert fixed.last_sync_at > good.last_sync_at


def test_unchanged_metadata_is_not_parsed_again_in_the_next_full_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fleet_server import _snapshot

    parsed: list[str] = []
    canonical = _snapshot.canonical_metadata

    def counting(text: str) -> str | None:
        parsed.append(text)
        return canonical(text)

    monkeypatch.setattr(_snapshot, "canonical_metadata", counting)

    def state(mode_text: str) -> agent_pb2.State:
        state = _state(rooms=[])
        state.rooms.add(id="a", type="match", origin="fleet", metadata=mode_text)
        state.rooms.add(id="b", type="match", origin="fleet", metadata='{ "x": 1 }')
        return state

    first = parse_snapshot(state('{"mode":"ranked"}'))
    assert first.rooms["b"].metadata == '{"x":1}' and len(parsed) == 2
    again = parse_snapshot(state('{"mode":"ranked"}'), first)
    # "a" was sent canonical: taken as it is; "b" was not: parsed again, same result
    assert parsed[2:] == ['{ "x": 1 }'] and again.rooms == first.rooms
    changed = parse_snapshot(state('{"mode":"casual"}'), again)
    assert changed.rooms["a"].metadata == '{"mode":"casual"}'
    assert '{"mode":"casual"}' in parsed


def test_plain_rooms_are_read_as_the_named_tuple_builds_them() -> None:
    rooms = parse_snapshot(_state(rooms=[("r1", "match", 3, "fleet"), ("r2", "duel", 0, "")])).rooms
    assert rooms == {"r1": ReportedRoom("match", 3, False), "r2": ReportedRoom("duel", 0, True)}
    assert all(type(room) is ReportedRoom for room in rooms.values())
    assert rooms["r1"].metadata == "" and rooms["r1"].max_connections is None
