"""Large snapshots and bursts of commands through one agent."""

from __future__ import annotations

from fleet_server import Orchestrator, Placement
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for


async def test_agent_with_twenty_thousand_rooms_joins_is_polled_and_rejoins() -> None:
    async with running_orchestrator(heartbeat_ms=200) as orch:
        rooms = {f"room-{i:05d}": RawRoom("match", i % 7, "local") for i in range(20_000)}
        agent = RawAgent(agent_url(orch.port), rooms=rooms)
        await agent.connect()
        try:
            first = agent.instance_id
            await wait_for(lambda: orch.fleet.stats.rooms == 20_000, timeout=20)
            size = agent.states_sent[0].ByteSize()
            assert 500_000 < size < 4 * 1024 * 1024
            polls = len(agent.polls)
            await wait_for(lambda: len(agent.polls) >= polls + 2, timeout=10)
            assert any(not s.full for s in agent.states_sent[1:])  # quiet: hash-only replies
            assert orch.fleet.get_room("room-12345") is not None
            await agent.close()
            await wait_for(lambda: orch.fleet.stats.instances == 0, timeout=10)
            again = RawAgent(agent_url(orch.port), rooms=rooms, process_uid=agent.process_uid)
            await again.connect()
            try:
                assert again.instance_id != first
                await wait_for(lambda: orch.fleet.stats.rooms == 20_000, timeout=20)
                assert orch.fleet.instances[0].id == again.instance_id
            finally:
                await again.close()
        finally:
            await agent.close()


async def test_five_hundred_creates_in_a_row_never_get_the_agent_kicked(
    orch: Orchestrator,
) -> None:
    agent = RawAgent(agent_url(orch.port))
    await agent.connect()
    try:
        await wait_for(lambda: orch.fleet.get_instance(agent.instance_id) is not None)
        pin = Placement(instance_id=agent.instance_id)
        for i in range(500):
            await orch.fleet.create_room("match", room_id=f"burst-{i}", placement=pin)
        assert orch.fleet.stats.rooms == 500
        assert not agent.closed.is_set()
        assert orch.fleet.get_instance(agent.instance_id) is not None
        await wait_for(lambda: len(agent.rooms) == 500 and not agent.states_sent[-1].full)
    finally:
        await agent.close()
