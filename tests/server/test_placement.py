"""Placement through real agents: strategies, filters, pins, capacity and status overrides
(SPEC §6; catalogue 30–39)."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_server import ErrorCode, FleetError, Placement
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import Harness, harness, silent

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

T = TypeVar("T")


class ZeroRandom(random.Random):
    """An RNG whose every draw is 0: ``choice`` always takes the first element."""

    def random(self) -> float:
        return 0.0


def _load(connections: int, **fields: Any) -> dict[str, Any]:
    rooms = {"load": RawRoom("match", connections)} if connections else {}
    return {"rooms": rooms, **fields}


async def _create(h: Harness, placement: Placement | None = None, **kwargs: Any) -> str:
    room = await h.orch.fleet.create_room("match", placement=placement, **kwargs)
    return room.instance_id


async def _no_candidate(h: Harness, placement: Placement | None = None) -> None:
    with pytest.raises(FleetError) as info:
        await h.orch.fleet.create_room("match", placement=placement)
    assert info.value.code is ErrorCode.NO_CANDIDATE
    assert info.value.http_status == 409


async def test_least_loaded_compares_ratios_when_every_candidate_declares_max_connections() -> None:
    async with harness(rng=random.Random(0)) as h:
        await h.join(**_load(80, max_connections=100))
        lighter = await h.join(**_load(30, max_connections=50))
        assert await _create(h) == lighter.instance_id  # 0.6 < 0.8


async def test_raw_connection_counts_are_compared_when_any_candidate_is_unlimited() -> None:
    async with harness(rng=random.Random(0)) as h:
        capped = await h.join(**_load(90, max_connections=100))
        unlimited = await h.join(**_load(50))
        assert await _create(h) == unlimited.instance_id  # 50 < 90, not 0.9 vs ?
        assert await _create(h, Placement(strategy="most-loaded")) == capped.instance_id


async def test_most_loaded_picks_the_busiest_and_least_loaded_the_idlest() -> None:
    async with harness(rng=random.Random(0)) as h:
        light = await h.join(**_load(5))
        heavy = await h.join(**_load(50))
        assert await _create(h, Placement(strategy="most-loaded")) == heavy.instance_id
        assert await _create(h, Placement(strategy="least-loaded")) == light.instance_id
        assert await _create(h) == light.instance_id  # least-loaded is the default


async def test_random_strategy_draws_over_candidates_in_join_order() -> None:
    async with harness(rng=ZeroRandom()) as h:
        first = await h.join(**_load(5))
        await h.join(**_load(50))
        assert await _create(h, Placement(strategy="random")) == first.instance_id
    async with harness(rng=random.Random(0)) as h:
        joined = [await h.join(**_load(5)), await h.join(**_load(50))]
        expected = random.Random(0).choice(joined).instance_id
        assert await _create(h, Placement(strategy="random")) == expected
        picks = {await _create(h, Placement(strategy="random")) for _ in range(20)}
        assert picks == {a.instance_id for a in joined}  # uniform: both are drawn


async def test_equal_loads_break_ties_by_room_count_raw_or_by_max_rooms_ratio() -> None:
    async with harness(rng=random.Random(0)) as h:
        two = await h.join(rooms={"a1": RawRoom("match"), "a2": RawRoom("match")})
        one = await h.join(rooms={"b1": RawRoom("match")})
        # Equal connections (0): fewest rooms first for least-loaded (1 < 2).
        assert await _create(h, Placement(strategy="least-loaded")) == one.instance_id
        # Now 2 vs 2; pin one more onto ``two`` (3 vs 2): most rooms first for most-loaded.
        await _create(h, Placement(instance_id=two.instance_id))
        assert await _create(h, Placement(strategy="most-loaded")) == two.instance_id
    async with harness(rng=random.Random(0)) as h:
        # Every candidate declares maxRooms: 2/10 = 0.2 vs 1/2 = 0.5.
        roomy = await h.join(max_rooms=10, rooms={"a1": RawRoom("match"), "a2": RawRoom("match")})
        tight = await h.join(max_rooms=2, rooms={"b1": RawRoom("match")})
        assert await _create(h, Placement(strategy="least-loaded")) == roomy.instance_id
        assert await _create(h, Placement(strategy="most-loaded")) == tight.instance_id


class LastRandom(random.Random):
    """An RNG whose ``choice`` always takes the last element."""

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        return seq[len(seq) - 1]


@pytest.mark.parametrize(("rng", "pick"), [(ZeroRandom(), 0), (LastRandom(), 2)])
async def test_remaining_ties_are_broken_by_the_rng_over_join_order(
    rng: random.Random, pick: int
) -> None:
    async with harness(rng=rng) as h:
        fleet = [await h.join(name=f"n{i}") for i in range(3)]
        for strategy in ("least-loaded", "most-loaded"):
            placement = Placement(strategy=strategy)
            chosen = await h.orch.fleet.create_room("match", placement=placement)
            assert chosen.instance_id == fleet[pick].instance_id
            await h.orch.fleet.destroy_room(chosen.id)


async def test_rooms_being_created_count_toward_load_ties() -> None:
    async with harness(rng=random.Random(0), command_timeout_ms=10_000) as h:
        slow = await h.join(name="slow")
        fast = await h.join(name="fast")
        slow.on_command = silent
        pending = asyncio.create_task(
            h.orch.fleet.create_room("match", placement=Placement(instance_id=slow.instance_id))
        )
        await wait_for(lambda: len(slow.commands) == 1)
        # Equal connections; ``slow`` has one room in flight, so least-loaded avoids it.
        assert await _create(h) == fast.instance_id
        await slow.send_frame(agent_pb2.Frame(ack=slow.execute(slow.commands[0])))
        await pending


@pytest.mark.parametrize(
    "misfit",
    [
        {"auto_create": False},
        {"room_types": ["lobby"]},
        {"labels": {"region": "us"}},
        {"status": "draining"},
        {"max_rooms": 0},
        {"max_connections": 0},
    ],
    ids=["auto-create-off", "type-not-hosted", "label-mismatch", "draining", "rooms-0", "conns-0"],
)
async def test_instance_failing_a_filter_is_no_candidate_until_a_fitting_one_joins(
    misfit: dict[str, Any],
) -> None:
    async with harness() as h:
        bad = await h.join(**({"labels": {"region": "eu"}} | misfit))
        eu = Placement(labels={"region": "eu"})
        await _no_candidate(h, eu)
        assert bad.commands == []
        good = await h.join(labels={"region": "eu", "tier": "x"})
        assert await _create(h, eu) == good.instance_id
        assert bad.commands == []


async def test_pins_place_on_the_instance_or_the_process_and_unknown_pins_are_not_found() -> None:
    async with harness() as h:
        idle = await h.join(name="idle")
        busy = await h.join(name="busy", **_load(40))
        assert await _create(h, Placement(instance_id=busy.instance_id)) == busy.instance_id
        assert await _create(h, Placement(process_uid=busy.process_uid)) == busy.instance_id
        assert await _create(h) == idle.instance_id
        for pin in (Placement(instance_id="i_nope"), Placement(process_uid="p_nope")):
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room("match", placement=pin)
            assert info.value.code is ErrorCode.INSTANCE_NOT_FOUND
            assert info.value.http_status == 404


async def test_pinning_both_instance_and_process_is_a_validation_error() -> None:
    with pytest.raises(FleetError) as info:
        Placement(instance_id="i_a", process_uid="p_a")
    assert info.value.code is ErrorCode.VALIDATION
    assert isinstance(info.value, ValueError)


async def test_unknown_strategy_is_a_validation_error_and_sends_nothing() -> None:
    with pytest.raises(FleetError) as info:
        Placement(strategy="fastest")  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.VALIDATION and info.value.http_status == 400
    async with harness() as h:
        agent = await h.join()
        with pytest.raises(FleetError) as bad:
            await h.orch.fleet.create_room("match", placement="fastest")  # type: ignore[arg-type]
        assert bad.value.code is ErrorCode.VALIDATION
        assert agent.commands == []


async def test_pins_skip_type_label_and_capacity_filters() -> None:
    async with harness() as h:
        agent = await h.join(
            room_types=["lobby"],
            labels={"region": "us"},
            max_rooms=0,
            max_connections=1,
            rooms={"full": RawRoom("lobby", 1)},
        )
        pin = Placement(instance_id=agent.instance_id, labels={"region": "eu"})
        assert await _create(h, pin) == agent.instance_id


async def test_pin_to_a_draining_instance_needs_force() -> None:
    async with harness() as h:
        agent = await h.join(status="draining", room_types=["lobby"], labels={"region": "us"})
        for pin in (
            Placement(instance_id=agent.instance_id, labels={"region": "eu"}),
            Placement(process_uid=agent.process_uid),
        ):
            with pytest.raises(FleetError) as info:
                await h.orch.fleet.create_room("match", placement=pin)
            assert info.value.code is ErrorCode.INSTANCE_DRAINING
            assert info.value.http_status == 409
        assert agent.commands == []
        forced = Placement(instance_id=agent.instance_id, force=True)
        assert await _create(h, forced) == agent.instance_id


async def test_pin_to_an_instance_without_auto_create_is_no_candidate_even_forced() -> None:
    async with harness() as h:
        agent = await h.join(auto_create=False)
        for force in (False, True):
            await _no_candidate(h, Placement(instance_id=agent.instance_id, force=force))
        assert agent.commands == []


async def test_pin_to_a_stale_instance_needs_force() -> None:
    async with harness(heartbeat_ms=200) as h:
        agent = await h.join()
        outcomes: list[Any] = []
        done = asyncio.Event()

        async def on_stale(info: Any) -> None:
            for force in (False, True):
                pin = Placement(instance_id=info.id, force=force)
                try:
                    outcomes.append(await h.orch.fleet.create_room("match", placement=pin))
                except FleetError as exc:
                    outcomes.append(exc.code)
            done.set()

        h.orch.on("instance:stale", on_stale)
        agent.auto_reply = False  # the agent still acks commands
        await asyncio.wait_for(done.wait(), 5.0)
        assert outcomes[0] is ErrorCode.INSTANCE_DISCONNECTED
        assert outcomes[1].instance_id == agent.instance_id  # forced: placed
        assert len(agent.commands) == 1


async def test_process_pin_picks_the_newest_connection_of_a_reconnecting_process() -> None:
    async with harness(heartbeat_ms=200) as h:
        old = await h.join(name="old")
        new = await h.join(name="new", process_uid=old.process_uid)
        pin = Placement(process_uid=old.process_uid)
        assert await _create(h, pin) == new.instance_id
        # The old connection goes stale (a dropped socket not yet evicted): still the newer.
        results: list[str] = []
        done = asyncio.Event()

        async def on_stale(info: Any) -> None:
            if info.id == old.instance_id:
                assert h.orch.fleet.get_instance(old.instance_id) is not None
                results.append(await _create(h, pin))
                results.append(await _create(h))
                done.set()

        h.orch.on("instance:stale", on_stale)
        old.auto_reply = False
        await asyncio.wait_for(done.wait(), 5.0)
        assert results == [new.instance_id, new.instance_id]


async def test_connections_at_max_exclude_an_instance_and_one_below_fits() -> None:
    async with harness() as h:
        full = await h.join(**_load(10, max_connections=10))
        await _no_candidate(h)
        nearly = await h.join(**_load(9, max_connections=10))
        assert await _create(h, Placement(strategy="least-loaded")) == nearly.instance_id
        assert await _create(h, Placement(strategy="most-loaded")) == nearly.instance_id
        assert full.commands == []


async def test_rooms_at_max_rooms_exclude_an_instance_and_a_failed_create_frees_its_slot() -> None:
    async with harness() as h:
        agent = await h.join(max_rooms=2, rooms={"r1": RawRoom("match")})

        async def refuse_once(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            agent.on_command = None
            return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, error="host said no")

        agent.on_command = refuse_once
        with pytest.raises(FleetError) as info:
            await h.orch.fleet.create_room("match")
        assert info.value.code is ErrorCode.COMMAND_FAILED
        assert await _create(h) == agent.instance_id  # the slot came back
        await _no_candidate(h)  # 2 of 2 rooms now
        assert h.link(agent).instance.inflight == 0


async def test_drain_ack_removes_the_instance_from_placement_before_any_poll() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join()

        async def drain_without_flipping(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            if cmd.op == "drain":
                return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True)  # status stays active
            return agent.execute(cmd)

        agent.on_command = drain_without_flipping
        await h.orch.fleet.drain_instance(agent.instance_id)
        info = h.orch.fleet.get_instance(agent.instance_id)
        assert info is not None and info.status == "active"  # the read model is the agent's
        await _no_candidate(h)
        # Replies that still say ``active`` do not clear a ``draining`` override.
        await h.settle_polls(agent, count=2)
        assert h.orch.fleet.get_instance(agent.instance_id).status == "active"  # type: ignore[union-attr]
        assert agent.polls[-1].status == "active"  # polls echo the read model, not the override
        await _no_candidate(h)


async def test_undrain_ack_makes_a_draining_instance_a_candidate_at_once() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = await h.join(status="draining")
        await _no_candidate(h)

        async def undrain_without_flipping(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            if cmd.op == "undrain":
                return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True)  # status stays draining
            return agent.execute(cmd)

        agent.on_command = undrain_without_flipping
        await h.orch.fleet.undrain_instance(agent.instance_id)
        assert h.orch.fleet.get_instance(agent.instance_id).status == "draining"  # type: ignore[union-attr]
        assert await _create(h) == agent.instance_id
        await h.settle_polls(agent, count=2)
        assert await _create(h) == agent.instance_id


async def test_failed_drain_records_no_override() -> None:
    async with harness() as h:
        agent = await h.join()

        async def refuse(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            if cmd.op == "drain":
                return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, error="not now")
            return agent.execute(cmd)

        agent.on_command = refuse
        with pytest.raises(FleetError) as info:
            await h.orch.fleet.drain_instance(agent.instance_id)
        assert info.value.code is ErrorCode.COMMAND_FAILED and "not now" in str(info.value)
        assert await _create(h) == agent.instance_id


async def test_drain_override_clears_once_a_snapshot_agrees_so_a_later_self_undrain_counts() -> (
    None
):
    async with harness(heartbeat_ms=60) as h:
        agent = await h.join()
        await h.orch.fleet.drain_instance(agent.instance_id)  # the agent flips to draining
        await h.applied(agent)
        assert h.orch.fleet.get_instance(agent.instance_id).status == "draining"  # type: ignore[union-attr]
        await _no_candidate(h)
        agent.status = "active"  # the agent undrains on its own, no command
        await h.applied(agent)
        assert await _create(h) == agent.instance_id
