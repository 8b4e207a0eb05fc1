"""Room ids: validation, generation, reservation, public encoding, collisions and holds
(SPEC §7; catalogue 40–47)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_server import ErrorCode, FleetError, Placement
from fleet_server._ids import ID_ALPHABET, encode_public_id, generate_room_id, is_valid_room_id
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for

from .harness import Harness, harness, silent

GENERATED = re.compile(r"r_[A-Za-z0-9_-]{21}")


async def _room_exists(h: Harness, room_id: str, placement: Placement | None = None) -> None:
    with pytest.raises(FleetError) as info:
        await h.orch.fleet.create_room("match", room_id=room_id, placement=placement)
    assert info.value.code is ErrorCode.ROOM_EXISTS
    assert info.value.http_status == 409


async def _outstanding_poll(agent: RawAgent) -> agent_pb2.Poll:
    """The poll the agent has not answered yet (waiting for the next one if needed)."""
    answered = {s.req_id for s in agent.states_sent}
    await wait_for(lambda: agent.polls and agent.polls[-1].req_id not in answered)
    return agent.polls[-1]


@pytest.mark.parametrize("room_id", ["match-42", "r_aZ09_-", "a" * 64, "A", "0", "_", "-"])
async def test_valid_room_id_is_sent_verbatim(room_id: str) -> None:
    async with harness() as h:
        agent = await h.join()
        room = await h.orch.fleet.create_room("match", room_id=room_id)
        assert room.id == room_id
        assert [c.room_id for c in agent.commands] == [room_id]
        assert h.orch.fleet.get_room(room_id) == room


INVALID_IDS = ["", "a" * 65, "has space", "a/b", "a~b", "münchen", "abc\n", "a%2Fb", "٣", "a.b"]


async def test_invalid_room_ids_are_validation_errors_and_send_nothing() -> None:
    async with harness() as h:
        agent = await h.join()
        for room_id in INVALID_IDS:
            assert not is_valid_room_id(room_id), room_id
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room("match", room_id=room_id)
            assert info.value.code is ErrorCode.VALIDATION, room_id
            assert info.value.http_status == 400
            assert not h.orch.fleet._read.is_taken(room_id)
        for bad in (42, b"bytes"):
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room("match", room_id=bad)  # type: ignore[arg-type]
            assert info.value.code is ErrorCode.VALIDATION
        for room_type in ("", None):
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room(room_type)  # type: ignore[arg-type]
            assert info.value.code is ErrorCode.VALIDATION
        assert agent.commands == []


@pytest.mark.parametrize(
    ("raw", "public"),
    [
        ("a/b", "a%2Fb"),
        ("evil~name", "evil%7Ename"),
        ("a b", "a%20b"),
        ("café", "caf%C3%A9"),
        ("100%", "100%25"),
        ("a%2Fb", "a%252Fb"),
        ("p_1~x", "p_1%7Ex"),
        ("match-42", "match-42"),
        ("r_aZ09_-", "r_aZ09_-"),
        ("x" * 200, "x" * 200),
    ],
)
def test_public_id_encodes_every_byte_outside_the_charset(raw: str, public: str) -> None:
    assert encode_public_id(raw) == public
    assert "~" not in encode_public_id(raw)


async def test_agent_reported_ids_are_listed_and_looked_up_by_their_public_form() -> None:
    async with harness() as h:
        raw_ids = ["a/b", "evil~name", "a b", "café", "plain"]
        agent = await h.join(rooms={raw: RawRoom("match", 1) for raw in raw_ids})
        fleet = h.orch.fleet
        assert sorted(r.id for r in fleet.rooms) == sorted(encode_public_id(r) for r in raw_ids)
        assert fleet.get_room("a%2Fb") is not None
        assert fleet.get_room("caf%C3%A9") is not None
        assert fleet.get_room("evil%7Ename") is not None
        assert fleet.get_room("plain") is not None
        for raw in ("a/b", "evil~name", "a b", "café"):
            assert fleet.get_room(raw) is None
        assert all(r.instance_id == agent.instance_id for r in fleet.rooms)


async def test_local_room_with_unsafe_id_is_encoded_and_destroyed_by_its_raw_id() -> None:
    raw = "lobby/eu~1 münchen"
    public = "lobby%2Feu%7E1%20m%C3%BCnchen"
    async with harness() as h:
        agent = await h.join(room_types=["lobby"], rooms={raw: RawRoom("lobby", 2, "local")})
        room = h.orch.fleet.get_room(public)
        assert room is not None and room.local is True and room.type == "lobby"
        assert h.orch.fleet.get_room(raw) is None
        with pytest.raises(FleetError) as info:
            await h.orch.fleet.destroy_room(raw)
        assert info.value.code is ErrorCode.ROOM_NOT_FOUND
        assert agent.commands == []
        await h.orch.fleet.destroy_room(public)
        assert [(c.op, c.room_id) for c in agent.commands] == [("destroy", raw)]
        assert h.orch.fleet.get_room(public) is None
        assert raw not in agent.rooms


def test_generated_ids_are_r_plus_21_alphabet_chars_and_unique() -> None:
    ids = [generate_room_id() for _ in range(200)]
    assert all(GENERATED.fullmatch(i) and is_valid_room_id(i) for i in ids)
    assert len(set(ids)) == 200
    assert set("".join(i[2:] for i in ids)) <= set(ID_ALPHABET)


async def test_creates_without_an_id_get_unique_generated_ids_that_are_then_taken() -> None:
    async with harness() as h:
        agent = await h.join()
        rooms = [await h.orch.fleet.create_room("match") for _ in range(200)]
        ids = [r.id for r in rooms]
        assert all(GENERATED.fullmatch(i) for i in ids)
        assert len(set(ids)) == 200
        assert [c.room_id for c in agent.commands] == ids
        await _room_exists(h, ids[17])
        assert len(agent.commands) == 200


async def test_id_generation_retries_past_taken_ids_and_gives_up_after_1000_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness() as h:
        agent = await h.join(rooms={"r_taken": RawRoom("match", 1)})
        draws: list[str] = []
        script = iter(["r_taken", "r_taken", "r_free"])

        def scripted() -> str:
            draws.append(next(script, "r_taken"))
            return draws[-1]

        monkeypatch.setattr("fleet_server._fleet.generate_room_id", scripted)
        room = await h.orch.fleet.create_room("match")
        assert room.id == "r_free" and draws == ["r_taken", "r_taken", "r_free"]
        draws.clear()
        with pytest.raises(FleetError) as info:
            await h.orch.fleet.create_room("match")
        assert info.value.code is ErrorCode.ROOM_EXISTS
        assert len(draws) == 1000
        assert [c.room_id for c in agent.commands] == ["r_free"]


async def test_an_id_listed_by_any_instance_is_taken_even_for_a_pin_elsewhere() -> None:
    async with harness() as h:
        await h.join(rooms={"busy": RawRoom("match", 1, "local")})
        other = await h.join(name="other")
        await _room_exists(h, "busy", Placement(instance_id=other.instance_id))
        assert other.commands == []


async def test_ten_concurrent_creates_of_one_id_let_exactly_one_through() -> None:
    async with harness() as h:
        agent = await h.join()
        results = await asyncio.gather(
            *(h.orch.fleet.create_room("match", room_id="solo") for _ in range(10)),
            return_exceptions=True,
        )
        codes = [r.code for r in results if isinstance(r, FleetError)]
        assert codes == [ErrorCode.ROOM_EXISTS] * 9
        assert [c.room_id for c in agent.commands] == ["solo"]


async def test_an_id_reserved_by_an_in_flight_create_is_taken() -> None:
    async with harness(command_timeout_ms=10_000) as h:
        agent = await h.join()
        agent.on_command = silent
        pending = asyncio.create_task(h.orch.fleet.create_room("match", room_id="inflight"))
        await wait_for(lambda: len(agent.commands) == 1)
        await _room_exists(h, "inflight")
        await agent.send_frame(agent_pb2.Frame(ack=agent.execute(agent.commands[0])))
        assert (await pending).id == "inflight"
        await _room_exists(h, "inflight")


async def test_failed_creates_release_their_id() -> None:
    async with harness() as h:
        agent = await h.join(labels={"region": "eu"})
        # NO_CANDIDATE: nothing fits the labels.
        with pytest.raises(FleetError) as info:
            await h.orch.fleet.create_room(
                "match", room_id="again", placement=Placement(labels={"region": "us"})
            )
        assert info.value.code is ErrorCode.NO_CANDIDATE

        # COMMAND_FAILED, then ROOM_EXISTS from the agent: each releases the id.
        replies: Iterator[dict[str, Any]] = iter(
            [
                {"ok": False, "error": "host refused"},
                {"ok": False, "exists": True},
            ]
        )

        async def refuse(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            fields = next(replies, None)
            if fields is None:
                agent.on_command = None
                return agent.execute(cmd)
            return agent_pb2.Ack(cmd_id=cmd.cmd_id, **fields)

        agent.on_command = refuse
        for code in (ErrorCode.COMMAND_FAILED, ErrorCode.ROOM_EXISTS):
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room("match", room_id="again")
            assert info.value.code is code
            assert not h.orch.fleet._read.is_taken("again")
        room = await h.orch.fleet.create_room("match", room_id="again")
        assert room.id == "again" and room.instance_id == agent.instance_id


async def test_fleet_room_keeps_its_id_over_a_local_one_which_is_namespaced_by_process() -> None:
    async with harness() as h:
        local = await h.join(name="local", rooms={"dup": RawRoom("match", 2, "local")})
        assert h.orch.fleet.get_room("dup").instance_id == local.instance_id  # type: ignore[union-attr]
        fleet_side = await h.join(name="fleet", rooms={"dup": RawRoom("match", 1, "fleet")})
        kept = h.orch.fleet.get_room("dup")
        assert kept is not None and kept.instance_id == fleet_side.instance_id
        assert kept.local is False
        renamed = h.orch.fleet.get_room(f"{local.process_uid}~dup")
        assert renamed is not None
        assert renamed.instance_id == local.instance_id and renamed.local is True
        assert h.orch.fleet.get_room(f"{local.instance_id}~dup") is None
        assert sorted(r.id for r in h.orch.fleet.rooms) == sorted(
            ["dup", f"{local.process_uid}~dup"]
        )
        # Destroying the namespaced room sends the raw id to its own instance.
        await h.orch.fleet.destroy_room(f"{local.process_uid}~dup")
        assert [(c.op, c.room_id) for c in local.commands] == [("destroy", "dup")]
        assert fleet_side.commands == []
        assert h.orch.fleet.get_room("dup").instance_id == fleet_side.instance_id  # type: ignore[union-attr]


async def _collide(h: Harness) -> tuple[RawAgent, RawAgent]:
    first = await h.join(name="first", process_uid="p_first", rooms={"dup": RawRoom("match")})
    second = await h.join(
        name="second", process_uid="p_second", rooms={"dup": RawRoom("match", 0, "fleet")}
    )
    return first, second


async def test_same_fleet_id_on_two_instances_earlier_joiner_keeps_it_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.server")
    async with harness(heartbeat_ms=60) as h:
        first = await h.join(
            name="first", process_uid="p_first", rooms={"dup": RawRoom("match", 0, "fleet")}
        )
        second = await h.join(
            name="second", process_uid="p_second", rooms={"dup": RawRoom("match", 0, "fleet")}
        )
        fleet = h.orch.fleet
        assert fleet.get_room("dup").instance_id == first.instance_id  # type: ignore[union-attr]
        assert fleet.get_room("p_second~dup").instance_id == second.instance_id  # type: ignore[union-attr]
        warnings = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
        assert len(warnings) == 1
        assert first.instance_id in warnings[0] and second.instance_id in warnings[0]
        assert "p_second~dup" in warnings[0]
        # Later snapshots, the later joiner's first: nothing moves, no second warning.
        second.rooms["dup"].connections = 3
        await h.applied(second)
        first.rooms["dup"].connections = 4
        await h.applied(first)
        assert fleet.get_room("dup").connections == 4  # type: ignore[union-attr]
        assert fleet.get_room("p_second~dup").connections == 3  # type: ignore[union-attr]
        assert len([r for r in caplog.records if "duplicate" in r.getMessage()]) == 1


async def test_collision_outcome_is_reproduced_by_a_rebuilt_orchestrator() -> None:
    outcomes: list[list[tuple[str, str, bool]]] = []
    for _ in range(2):
        async with harness() as h:
            await h.join(
                name="first", process_uid="p_first", rooms={"dup": RawRoom("match", 1, "local")}
            )
            await h.join(
                name="second", process_uid="p_second", rooms={"dup": RawRoom("match", 2, "fleet")}
            )
            await h.join(
                name="third", process_uid="p_third", rooms={"dup": RawRoom("match", 3, "fleet")}
            )
            outcomes.append(
                sorted(
                    (r.id, h.orch.fleet.get_instance(r.instance_id).name, r.local)  # type: ignore[union-attr]
                    for r in h.orch.fleet.rooms
                )
            )
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == [
        ("dup", "second", False),
        ("p_first~dup", "first", True),
        ("p_third~dup", "third", False),
    ]


async def test_loser_takes_the_id_over_when_the_keeper_leaves() -> None:
    async with harness() as h:
        first, second = await _collide(h)
        # ``second`` has the fleet room: it keeps ``dup``; ``first`` (local) is namespaced.
        assert h.orch.fleet.get_room("dup").instance_id == second.instance_id  # type: ignore[union-attr]
        await second.close()
        await wait_for(lambda: h.orch.fleet.get_instance(second.instance_id) is None)
        room = h.orch.fleet.get_room("dup")
        assert room is not None and room.instance_id == first.instance_id
        assert h.orch.fleet.get_room("p_first~dup") is None


async def test_timed_out_create_holds_its_id_and_a_room_slot_until_the_next_reply() -> None:
    async with harness(heartbeat_ms=400, command_timeout_ms=100) as h:
        agent = await h.join(max_rooms=1, labels={"only": "me"})
        other = await h.join(name="other")
        agent.on_command = silent
        agent.auto_reply = False  # no reply may settle the hold yet
        with pytest.raises(FleetError) as info:
            await h.orch.fleet.create_room(
                "match", room_id="held", placement=Placement(instance_id=agent.instance_id)
            )
        assert info.value.code is ErrorCode.COMMAND_TIMEOUT and info.value.http_status == 504
        fleet = h.orch.fleet
        assert not h.link(agent).instance.stale
        # Not listed, but taken everywhere, and counted toward maxRooms.
        assert fleet.get_room("held") is None
        assert fleet.get_instance(agent.instance_id).rooms == ()  # type: ignore[union-attr]
        assert fleet.stats.rooms == 0
        await _room_exists(h, "held", Placement(instance_id=other.instance_id))
        with pytest.raises(FleetError) as full:
            await fleet.create_room("match", placement=Placement(labels={"only": "me"}))
        assert full.value.code is ErrorCode.NO_CANDIDATE
        assert other.commands == []
        # The owner's next reply (hash-only: nothing changed) settles the hold.
        poll = await _outstanding_poll(agent)
        state = await agent.reply(poll)
        assert not state.full
        await wait_for(lambda: not fleet._read.is_taken("held"))
        agent.on_command = None
        agent.auto_reply = True
        room = await fleet.create_room("match", placement=Placement(labels={"only": "me"}))
        assert room.instance_id == agent.instance_id
        again = await fleet.create_room(
            "match", room_id="held", placement=Placement(instance_id=other.instance_id)
        )
        assert again.instance_id == other.instance_id


async def test_hold_is_released_by_a_full_snapshot_without_the_room() -> None:
    async with harness(heartbeat_ms=400, command_timeout_ms=100) as h:
        agent = await h.join(rooms={"r": RawRoom("match", 1)})
        agent.on_command = silent
        agent.auto_reply = False
        with pytest.raises(FleetError):
            await h.orch.fleet.create_room("match", room_id="held")
        assert h.orch.fleet._read.is_taken("held")
        agent.rooms["r"].connections = 2
        state = await agent.reply(await _outstanding_poll(agent))
        assert state.full
        await wait_for(lambda: not h.orch.fleet._read.is_taken("held"))
        assert h.orch.fleet.get_room("held") is None
        agent.auto_reply = True


async def test_timeout_hold_outlives_its_instance_until_the_orphan_hold_lapses() -> None:
    async with harness(heartbeat_ms=400, command_timeout_ms=100, orphan_hold_ms=600) as h:
        agent = await h.join()
        other = await h.join(name="other")
        agent.on_command = silent
        agent.auto_reply = False
        with pytest.raises(FleetError):
            await h.orch.fleet.create_room(
                "match", room_id="held", placement=Placement(instance_id=agent.instance_id)
            )
        await _room_exists(h, "held")
        await agent.close(code=1001)
        await wait_for(lambda: h.orch.fleet.orphans.holds_of(agent.process_uid) == {"held"})
        await _room_exists(h, "held")  # the game server may have the room: still taken
        await wait_for(lambda: "held" not in h.orch.fleet.orphans, timeout=5.0)
        room = await h.orch.fleet.create_room("match", room_id="held")
        assert room.instance_id == other.instance_id
