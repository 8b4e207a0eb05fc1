"""Following the leader and watching across a failover: two orchestrators on a real etcd,
a real ``FleetAgent`` that knows both, and the client over REST and gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from fleet_agent import RoomManager
from fleet_client import FleetEvent, RoomInfo
from fleet_server import Orchestrator
from tests.support.agents import define_rooms, fleet_agent
from tests.support.etcd import EtcdServer
from tests.support.orchestrators import agent_url, new_orchestrator
from tests.support.waits import wait_for

from .conftest import client_for

LEASE_MS = 2000


@contextlib.asynccontextmanager
async def pair(etcd: EtcdServer) -> AsyncIterator[list[Orchestrator]]:
    started: list[Orchestrator] = []
    try:
        for _ in range(2):
            orch = new_orchestrator(
                api=True,
                grpc_port=0,
                heartbeat_ms=100,
                etcd_endpoints=[etcd.endpoint],
                cluster="client",
                leader_lease_ms=LEASE_MS,
                settle_ms=3000,
            )
            await orch.listen()
            started.append(orch)
        yield started
    finally:
        for orch in started:
            await orch.shutdown()


async def leader_of(group: list[Orchestrator]) -> Orchestrator:
    await wait_for(lambda: sum(o._cluster.leads() for o in group) == 1, LEASE_MS / 1000 + 5)
    return next(o for o in group if o._cluster.leads())


async def test_the_client_follows_the_leader_and_a_new_one_after_a_failover(
    etcd: EtcdServer, transport: str
) -> None:
    async with pair(etcd) as group:
        leader = await leader_of(group)
        standby = next(o for o in group if o is not leader)
        agent = fleet_agent(
            define_rooms(RoomManager(), "match"),
            url=[agent_url(o.port) for o in (leader, standby)],
        )
        await agent.connect()
        try:
            await wait_for(lambda: leader.fleet.instances)
            # The standby first in the list: its NOT_LEADER hint sends the client on.
            async with client_for([standby, leader], transport) as fleet:
                room = await fleet.create_room("match")
                assert leader.fleet.get_room(room.id) is not None
                assert (await fleet.cluster()).role == "leader"
                await leader.shutdown()  # the standby takes over
                started = time.monotonic()
                after = await fleet.create_room("match")
                took = time.monotonic() - started
                assert standby.fleet.get_room(after.id) is not None
                assert standby.fleet.get_room(room.id) is not None  # nothing lost
                assert took < LEASE_MS / 1000 + 15, took  # settle included
        finally:
            await agent.disconnect()


async def test_watch_misses_no_room_across_a_failover(etcd: EtcdServer, transport: str) -> None:
    async with pair(etcd) as group:
        leader = await leader_of(group)
        standby = next(o for o in group if o is not leader)
        agent = fleet_agent(
            define_rooms(RoomManager(), "match"),
            url=[agent_url(o.port) for o in (leader, standby)],
        )
        await agent.connect()
        seen: dict[str, RoomInfo] = {}
        syncs: list[FleetEvent] = []

        async def watch() -> None:
            async with client_for([leader, standby], transport) as watcher:
                async for event in watcher.watch():
                    if event.type == "room:create" and isinstance(event.data, RoomInfo):
                        assert event.data.id not in seen, event  # never twice
                        seen[event.data.id] = event.data
                    elif event.type == "room:destroy" and isinstance(event.data, RoomInfo):
                        seen.pop(event.data.id)
                    elif event.type == "sync" and event.resync:
                        syncs.append(event)

        watching = asyncio.create_task(watch())
        try:
            await wait_for(lambda: leader.fleet.instances and syncs)
            async with client_for([leader, standby], transport) as fleet:
                before = [await fleet.create_room("match") for _ in range(5)]
                await fleet.destroy_room(before[0].id)
                await leader.shutdown()
                after = [await fleet.create_room("match") for _ in range(5)]
                await fleet.destroy_room(after[0].id)
                final = {room.id for room in await fleet.rooms()}
            assert final == {room.id for room in before[1:] + after[1:]}
            await wait_for(lambda: set(seen) == final, 10, message=lambda: f"{set(seen)} {final}")
            assert len(syncs) >= 2  # the first connection, and the one after the failover
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            await agent.disconnect()
