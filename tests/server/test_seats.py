"""Seat reservations through the Python API (CONTRACT §11, docs/matchmaking.md §3–4)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import pytest

from fleet_agent._tickets import read_ticket, ticket_key
from fleet_server import ErrorCode, FleetError, Placement
from tests.support.keys import KEY
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import harness


def _room(connections: int = 0, seats: int | None = 10, **extra: Any) -> RawRoom:
    return RawRoom("match", connections, origin="fleet", max_connections=seats, **extra)


async def _fails(call: Any, code: ErrorCode) -> FleetError:
    with pytest.raises(FleetError) as info:
        await call
    assert info.value.code is code, info.value
    return info.value


async def test_the_fullest_room_with_free_seats_is_chosen_and_its_ticket_verifies() -> None:
    async with harness() as h:
        await h.join(rooms={"a": _room(2), "b": _room(7), "c": _room(9), "d": _room(1)})
        grant = await h.orch.fleet.reserve_seats("match", 2)
        assert grant.room.id == "b" and not grant.created  # c has only 1 seat left
        assert grant.room.reserved_seats == 2 and grant.room.free_seats == 1
        assert h.orch.fleet.get_room("b").reserved_seats == 2  # type: ignore[union-attr]
        claims = read_ticket(ticket_key(KEY), grant.reservation.ticket)
        assert (claims.id, claims.room, claims.seats) == (grant.reservation.id, "b", 2)
        assert claims.exp == grant.reservation.expires_at
        assert grant.reservation.expires_at - time.time() * 1000 == pytest.approx(30_000, abs=2000)
        assert grant.to_dict()["reservation"]["ticket"] == grant.reservation.ticket


async def test_ties_go_to_the_lower_room_id_and_unlimited_rooms_fit_any_request() -> None:
    async with harness() as h:
        await h.join(rooms={"z": _room(3, seats=None), "m": _room(3, seats=None)})
        grant = await h.orch.fleet.reserve_seats("match", 1000)
        assert grant.room.id == "m" and grant.room.free_seats is None


async def test_without_create_nothing_fitting_is_no_candidate_and_nothing_changes() -> None:
    async with harness() as h:
        await h.join(rooms={"full": _room(10), "locked": _room(0, locked=True)})
        before = h.orch.fleet.state_hash
        await _fails(h.orch.fleet.reserve_seats("match"), ErrorCode.NO_CANDIDATE)
        await _fails(h.orch.fleet.reserve_seats("other"), ErrorCode.NO_CANDIDATE)
        assert h.orch.fleet.state_hash == before


async def test_with_create_a_room_is_created_with_its_options_and_seats_reserved() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"full": _room(10)})
        grant = await h.orch.fleet.reserve_seats(
            "match", 3, create={"options": {"map": "dust", "teams": 2}}
        )
        assert grant.created and grant.room.reserved_seats == 3
        command = agent.commands[-1]
        assert (command.op, command.room_type) == ("create", "match")
        assert command.options == '{"map":"dust","teams":2}'
        assert grant.room.id == command.room_id


async def test_metadata_must_match_every_requested_key_with_its_json_type() -> None:
    async with harness() as h:
        await h.join(
            rooms={
                "eu": _room(1, metadata='{"mode":"ranked","region":"eu","teams":2}'),
                "us": _room(5, metadata='{"mode":"ranked","region":"us","teams":"2"}'),
                "casual": _room(8, metadata='{"mode":"casual"}'),
            }
        )
        fleet = h.orch.fleet
        assert (await fleet.reserve_seats("match", metadata={"mode": "ranked"})).room.id == "us"
        assert (await fleet.reserve_seats("match", metadata={"teams": 2})).room.id == "eu"
        await _fails(fleet.reserve_seats("match", metadata={"teams": True}), ErrorCode.NO_CANDIDATE)
        grant = await fleet.reserve_seats("match", metadata={"region": "eu"})
        assert grant.room.metadata["teams"] == 2


async def test_release_ttl_and_acceptance_each_end_a_reservation() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"r": _room(0)})
        fleet = h.orch.fleet
        released = await fleet.reserve_seats("match", 4)
        fleet.release_seats(released.reservation.id)
        assert fleet.get_room("r").reserved_seats == 0  # type: ignore[union-attr]
        with pytest.raises(FleetError) as gone:
            fleet.release_seats(released.reservation.id)
        assert gone.value.code is ErrorCode.NOT_FOUND
        await fleet.reserve_seats("match", 1, ttl_ms=1000)
        assert fleet.get_room("r").reserved_seats == 1  # type: ignore[union-attr]
        await wait_for(lambda: fleet.get_room("r").reserved_seats == 0, 5)  # type: ignore[union-attr]
        accepted = await fleet.reserve_seats("match", 2)
        agent.rooms["r"].connections = 2  # the players are in …
        agent.accepted.add(accepted.reservation.id)  # … and their tickets accepted, at once
        await h.applied(agent)
        room = fleet.get_room("r")
        assert room is not None and (room.connections, room.reserved_seats) == (2, 0)


async def test_a_destroyed_room_ends_its_reservations() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"r": _room(0)})
        grant = await h.orch.fleet.reserve_seats("match", 1)
        del agent.rooms["r"]
        await h.applied(agent)
        with pytest.raises(FleetError) as info:
            h.orch.fleet.release_seats(grant.reservation.id)
        assert info.value.code is ErrorCode.NOT_FOUND


async def test_locked_draining_and_unmatched_instances_are_skipped_selectors_in_order() -> None:
    async with harness() as h:
        await h.join(name="eu", labels={"region": "eu"}, rooms={"e": _room(1)})
        await h.join(name="us", labels={"region": "us"}, rooms={"u": _room(5)})
        await h.join(name="dr", status="draining", rooms={"d": _room(9)})
        await h.join(name="lk", rooms={"l": _room(9, locked=True)})
        fleet = h.orch.fleet
        assert (await fleet.reserve_seats("match")).room.id == "u"
        west = Placement(
            selectors=(
                {"labels": {"region": "ap"}},
                {"expressions": [{"key": "region", "op": "In", "values": ["eu"]}]},
            )
        )
        assert (await fleet.reserve_seats("match", placement=west)).room.id == "e"
        not_us = Placement(
            selectors=({"expressions": [{"key": "region", "op": "NotIn", "values": ["us"]}]},)
        )
        assert (await fleet.reserve_seats("match", placement=not_us)).room.id == "e"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seats": 0}, "seats"),
        ({"seats": 1001}, "seats"),
        ({"ttl_ms": 999}, "ttlMs"),
        ({"ttl_ms": 300_001}, "ttlMs"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"create": {"options": [1]}}, "options"),
        ({"create": {"options": {"x": "y" * 5000}}}, "options"),
        ({"create": {"other": 1}}, "create"),
    ],
)
async def test_bad_seat_requests_are_validation_errors(
    arguments: dict[str, Any], message: str
) -> None:
    async with harness() as h:
        await h.join(rooms={"full": _room(10)})
        error = await _fails(h.orch.fleet.reserve_seats("match", **arguments), ErrorCode.VALIDATION)
        assert message in str(error)


async def test_concurrent_seat_requests_never_over_commit_a_room() -> None:
    """1,000 requests of 1–4 seats at once against 10-seat rooms while players join (with
    their tickets: the game server counts them and reports the reservation accepted in
    the same snapshot) and leave: at no read is any room over its maximum, and every
    request gets seats, a new room or NO_CANDIDATE."""
    async with harness(heartbeat_ms=20) as h:
        agent = await h.join(rooms={f"r{i}": _room(0) for i in range(20)})
        fleet = h.orch.fleet
        rng = random.Random(5)
        granted: list[tuple[str, str, int]] = []  # (reservation id, raw room id, seats)
        over: list[Any] = []
        done = asyncio.Event()

        def check() -> None:
            for room in fleet.rooms:
                if room.max_connections is not None and (
                    room.connections + room.reserved_seats > room.max_connections
                ):
                    over.append(room)

        async def players() -> None:
            while not done.is_set() or granted:
                if granted:  # a player arrives with a ticket
                    reservation_id, raw, seats = granted.pop(rng.randrange(len(granted)))
                    if raw in agent.rooms:
                        agent.rooms[raw].connections += seats
                        agent.accepted.add(reservation_id)
                if rng.random() < 0.5:  # someone leaves
                    room = agent.rooms[f"r{rng.randrange(20)}"]
                    room.connections = max(0, room.connections - 1)
                await asyncio.sleep(0.002)
                check()

        async def one(n: int) -> str:
            await asyncio.sleep(rng.random() * 0.5)
            try:
                grant = await fleet.reserve_seats(
                    "match", 1 + n % 4, create={} if n % 50 == 0 else None
                )
            except FleetError as exc:
                return exc.code.value
            granted.append((grant.reservation.id, grant.room.id, grant.reservation.seats))
            check()
            return "created" if grant.created else "seated"

        crowd = asyncio.ensure_future(players())
        outcomes = await asyncio.gather(*(one(n) for n in range(1000)))
        done.set()
        await asyncio.wait_for(crowd, 10)
        check()
        assert not over, over[:3]
        assert set(outcomes) <= {"seated", "created", "NO_CANDIDATE"}
        assert {"seated", "created", "NO_CANDIDATE"} <= set(outcomes)


async def test_a_room_created_for_seats_takes_no_more_until_its_seats_are_known() -> None:
    """A room known from its create ack has unknown seats (no snapshot has listed it):
    concurrent requests must not pile into it; they create rooms of their own."""
    async with harness() as h:
        agent = await h.join()

        async def one_seat_rooms(cmd: Any) -> Any:
            ack = agent.execute(cmd)
            if cmd.op == "create":
                agent.rooms[cmd.room_id].max_connections = 1
            return ack

        agent.on_command = one_seat_rooms

        async def reserve() -> None:
            await h.orch.fleet.reserve_seats("match", 1, create={})

        for _ in range(10):
            await asyncio.gather(*(reserve() for _ in range(4)))
        await wait_for(
            lambda: all(r.max_connections == 1 for r in h.orch.fleet.rooms),
            message=lambda: str(h.orch.fleet.rooms),
        )
        over = [r for r in h.orch.fleet.rooms if r.connections + r.reserved_seats > 1]
        assert over == []
        assert sum(r.reserved_seats for r in h.orch.fleet.rooms) == 40


def _expected_room(
    fleet: Any, room_type: str, seats: int, metadata: dict[str, str], labels: dict[str, str]
) -> str | None:
    """The rule of docs/matchmaking.md §3 over every room, from the public views: the
    fullest room (connections + reserved, then the lower id) that fits, on an active
    instance with the labels."""
    open_ids = {
        i.id
        for i in fleet.instances
        if i.status == "active" and all(i.labels.get(k) == v for k, v in labels.items())
    }
    best: tuple[tuple[int, str], str] | None = None
    for room in fleet.rooms:
        if room.instance_id not in open_ids or room.type != room_type or room.locked:
            continue
        if room.free_seats is not None and room.free_seats < seats:
            continue
        if any(room.metadata.get(k) != v for k, v in metadata.items()):
            continue
        key = (-(room.connections + room.reserved_seats), room.id)
        if best is None or key < best[0]:
            best = (key, room.id)
    return best[1] if best is not None else None


async def test_the_choice_is_the_fullest_fitting_room_of_the_whole_fleet_as_rooms_change() -> None:
    """Random fleets changing under random requests: each choice is what a look at every
    room gives (the per-instance lists are remade whenever an instance's rooms change)."""
    rng = random.Random(11)
    types, colours = ("match", "duel"), ("red", "blue")
    async with harness(heartbeat_ms=20) as h:
        agents = [
            await h.join(labels={"region": region}, room_types=list(types))
            for region in ("eu", "eu", "us")
        ]
        fleet = h.orch.fleet
        live: list[str] = []
        for step in range(150):
            for agent in agents:  # the game servers move
                for _ in range(rng.randrange(3)):
                    raw = f"{agent.name}-{len(agent.rooms)}-{step}"
                    agent.rooms[raw] = RawRoom(
                        rng.choice(types),
                        rng.randrange(6),
                        origin="fleet",
                        metadata=f'{{"colour":"{rng.choice(colours)}"}}',
                        max_connections=rng.choice((None, 6, 8)),
                        locked=rng.random() < 0.1,
                    )
                for room in list(agent.rooms.values()):
                    if rng.random() < 0.2:
                        room.connections = rng.randrange(7)
                if agent.rooms and rng.random() < 0.2:
                    del agent.rooms[rng.choice(list(agent.rooms))]
            agents[step % 3].status = "draining" if rng.random() < 0.1 else "active"
            await asyncio.sleep(0.06)  # a few polls
            if live and rng.random() < 0.3:
                with contextlib.suppress(FleetError):  # its room may have gone since
                    fleet.release_seats(live.pop(rng.randrange(len(live))))
            room_type, seats = rng.choice(types), rng.randint(1, 4)
            metadata = {"colour": rng.choice(colours)} if rng.random() < 0.5 else {}
            labels = {"region": rng.choice(("eu", "us"))} if rng.random() < 0.5 else {}
            expected = _expected_room(fleet, room_type, seats, metadata, labels)
            placement = Placement(labels=labels) if labels else None
            try:
                grant = await fleet.reserve_seats(
                    room_type, seats, metadata=metadata or None, placement=placement
                )
            except FleetError as exc:
                assert exc.code is ErrorCode.NO_CANDIDATE and expected is None, (step, exc)
                continue
            assert grant.room.id == expected, step
            live.append(grant.reservation.id)
