"""``fleet_client`` under leader SIGKILLs and daemon restarts (docs/fleet-client.md):
a matchmaker creating rooms with client-made ids never gets a room twice, and every
room it was given is listed on one agent at the end.

``make chaos`` only (``CLIENT_TRIES``, 20 each there; 1 when run alone); ``make test`` runs
the short form in ``tests/client``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from fleet_client import FleetClient, FleetClientError, RoomInfo
from tests.support.etcd import EtcdServer
from tests.support.figures import report
from tests.support.keys import ADMIN
from tests.support.orchestrators import agent_url
from tests.support.ports import free_port
from tests.support.waits import wait_for

from .cluster import LEASE_MS, running_cluster, start_agents
from .support import AgentProcess, Daemon, agent_processes, agents_rooms, copies, owners

TRIES = int(os.environ.get("CLIENT_TRIES", "1"))
AGENTS = 20
HEARTBEAT_MS = 500
WORKERS = 4


class Creates:
    """``WORKERS`` tasks creating rooms through one client until stopped."""

    def __init__(self, fleet: FleetClient) -> None:
        self.fleet = fleet
        self.rooms: dict[str, RoomInfo] = {}
        self.failures: collections.Counter[str] = collections.Counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _work(self) -> None:
        while not self._stop.is_set():
            try:
                room = await self.fleet.create_room("match")
            except FleetClientError as exc:
                self.failures[exc.code] += 1
                await asyncio.sleep(0.1)
                continue
            assert room.id not in self.rooms, f"{room.id} handed out twice"
            self.rooms[room.id] = room
            await asyncio.sleep(0.02)


async def audit(fleet: FleetClient, hosts: list[AgentProcess], creates: Creates) -> None:
    """Every agent back; the read model equals the agents' rooms; no id on two agents;
    every room the client was given is listed, on the agent it was given on."""
    expected = {join.process_uid for host in hosts for join in host.joins}

    async def agreed() -> bool:
        instances = await fleet.instances()
        if {i.process_uid for i in instances} != expected:
            return False
        try:
            rooms = await agents_rooms(hosts)
        except TimeoutError:  # a host slow to answer on a loaded machine: ask again
            return False
        listed = {(r.id, owners(hosts).get(r.instance_id)) for r in await fleet.rooms()}
        return listed == {(room_id, uid) for uid, ids in rooms.items() for room_id in ids}

    await wait_for(agreed, 60, step=0.2, message="read model != the agents' rooms")
    rooms = await agents_rooms(hosts)
    assert not copies(rooms), copies(rooms)
    who = owners(hosts)
    where = {room.id: who[room.instance_id] for room in await fleet.rooms()}
    lost = [room_id for room_id in creates.rooms if room_id not in where]
    assert not lost, lost[:20]
    moved = [r for r, room in creates.rooms.items() if where[r] != who[room.instance_id]]
    assert not moved, moved[:20]


@pytest.mark.timeout(120 + TRIES * 25)
async def test_leader_sigkills_never_give_the_client_a_room_twice(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    async with (
        running_cluster(etcd, tmp_path, heartbeat_ms=HEARTBEAT_MS, settle_ms=5000) as cluster,
        aiohttp.ClientSession() as session,
        agent_processes() as hosts,
    ):
        await start_agents(cluster, tmp_path, AGENTS, hosts, per_host=10)
        await cluster.wait_members(session)
        urls = [node.url for node in cluster.nodes]
        async with FleetClient(urls, token_or_key=ADMIN, deadline_s=30) as fleet:
            creates = Creates(fleet)
            creates.start()
            follow_s: list[float] = []
            for _ in range(TRIES):
                await asyncio.sleep(1.0)
                old = await cluster.wait_leader(session, 10)
                given = len(creates.rooms)
                killed = time.monotonic()
                await old.kill()
                await wait_for(_more(creates, given), 20, step=0.05)
                follow_s.append(time.monotonic() - killed)
                await old.start()
                await cluster.wait_members(session)
            await creates.stop()
            await audit(fleet, hosts, creates)
        assert max(follow_s) <= LEASE_MS / 1000 + 15  # a new leader, plus its settle wait
        report(
            f"fleet_client through {TRIES} leader SIGKILLs",
            rooms=len(creates.rooms),
            failures=dict(creates.failures),
            first_room_after_kill_s=f"{min(follow_s):.2f}-{max(follow_s):.2f}",
        )


@pytest.mark.timeout(120 + TRIES * 25)
async def test_daemon_restarts_never_give_the_client_a_room_twice(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    args: tuple[str, ...] = ("--heartbeat", str(HEARTBEAT_MS))
    args += ("--state", str(tmp_path / "state.json"), "--settle", "5000")
    daemon = await Daemon.start(port, log, *args)
    try:
        async with agent_processes() as hosts:
            for i in range(2):
                host = await AgentProcess.start(
                    [agent_url(port)], f"h{i}", tmp_path, agents=10, backoff_ms=(100.0, 1000.0)
                )
                hosts.append(host)
            async with FleetClient(
                [f"http://127.0.0.1:{port}"], token_or_key=ADMIN, deadline_s=30
            ) as fleet:
                await wait_for(lambda: _count(fleet, AGENTS), 30, step=0.1)
                creates = Creates(fleet)
                creates.start()
                for n in range(TRIES):
                    await asyncio.sleep(1.0)
                    given = len(creates.rooms)
                    if n % 2:
                        daemon.signal(signal.SIGTERM)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(daemon.proc.wait(), 15)
                    await daemon.close()  # SIGKILL (a no-op after a clean stop)
                    daemon = await Daemon.start(port, log, *args)
                    await wait_for(_more(creates, given), 25, step=0.05)
                await creates.stop()
                await audit(fleet, hosts, creates)
            report(
                f"fleet_client through {TRIES} daemon restarts",
                rooms=len(creates.rooms),
                failures=dict(creates.failures),
            )
    finally:
        await daemon.close()


async def _count(fleet: FleetClient, agents: int) -> bool:
    return (await fleet.stats()).instances == agents


def _more(creates: Creates, given: int) -> Callable[[], bool]:
    return lambda: len(creates.rooms) > given
