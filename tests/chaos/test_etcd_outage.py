"""etcd away for about 10 s under create load, three daemons, agents on all three URLs
(CONTRACT §10).

etcd is stopped (SIGTERM; then started again on the same ports and data) or frozen
(SIGSTOP, then SIGCONT). The leader cannot renew its lease: it steps down by its own
clock within the lease, closing its agent links with 4010, and then nobody leads while
etcd is away — every node says ``standby``, names no leader and refuses creates with
``NOT_LEADER``. Once etcd answers again a leader is back within the lease, every agent
rejoins it and explicit-id creates succeed. No room is lost or duplicated.

``ETCD_OUTAGE_S`` sets how long etcd is away (4 s, twice the lease; ``make chaos``: 10 s);
``ETCD_OUTAGES`` which ways (``stop`` in ``make test``, ``stop,pause`` in ``make chaos``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.clients import Rest, cause
from tests.support.etcd import EtcdServer
from tests.support.figures import report
from tests.support.waits import wait_for

from .cluster import (
    LEASE_MS,
    Cluster,
    CreateLoad,
    Matchmaker,
    all_agents_on,
    audit,
    running_cluster,
    start_agents,
)
from .support import RoomWatch, agent_processes

OUTAGE_S = float(os.environ.get("ETCD_OUTAGE_S", "4"))
OUTAGES = os.environ.get("ETCD_OUTAGES", "stop").split(",")
AGENTS = 20
HEARTBEAT_MS = 250
LEASE_S = LEASE_MS / 1000
BACK_WITHIN_S = 10.0


async def nobody_leads(cluster: Cluster, session: aiohttp.ClientSession) -> bool:
    """Every node answers, as a standby that names no leader."""
    infos = await cluster.infos(session)
    return all(
        info is not None and info["role"] == "standby" and info["leader"] is None
        for info in infos.values()
    )


@pytest.mark.timeout(90 + OUTAGE_S)
@pytest.mark.parametrize("outage", OUTAGES)
async def test_with_etcd_away_nobody_leads_and_a_leader_is_back_within_the_lease(
    etcd: EtcdServer, tmp_path: Path, outage: str
) -> None:
    """etcd away for 10 s under create load: the leader steps down within the lease and
    its agents get 4010; nobody leads and every create is refused ``NOT_LEADER`` until
    etcd is back; then a leader within the lease, every agent back and explicit-id
    creates within 10 s; nothing lost or duplicated."""
    async with (
        running_cluster(etcd, tmp_path, heartbeat_ms=HEARTBEAT_MS) as cluster,
        aiohttp.ClientSession() as session,
        agent_processes() as hosts,
    ):
        # The agents start while the cluster elects its first leader.
        await start_agents(
            cluster, tmp_path, AGENTS, hosts, per_host=AGENTS, backoff_ms=(100.0, 1000.0)
        )
        old = await cluster.wait_leader(session, 15)
        await cluster.wait_members(session)
        matchmaker = Matchmaker(session, cluster)
        await wait_for(lambda: all_agents_on(matchmaker, hosts), 10, step=0.05)
        load = CreateLoad(matchmaker, "e", rate=50, workers=5)
        async with RoomWatch(Matchmaker(session, cluster).rooms, 0.5) as watch:
            load.start()
            await asyncio.sleep(1.0)
            paused = time.monotonic()
            await asyncio.to_thread(etcd.stop if outage == "stop" else etcd.pause)

            async def stepped_down() -> bool:
                info = await cluster.info(session, old)
                return info is not None and info["role"] == "standby"

            await wait_for(stepped_down, LEASE_S, step=0.02, message="the leader kept leading")
            step_down_s = time.monotonic() - paused
            await wait_for(lambda: nobody_leads(cluster, session), LEASE_S, step=0.05)
            nobody_s = time.monotonic() - paused

            # Until etcd is back: no leader anywhere, every create refused NOT_LEADER,
            # and the load acks nothing (it only retries).
            acked_then = len(load.acked)
            checks = 0
            while time.monotonic() - paused < OUTAGE_S:
                assert await nobody_leads(cluster, session)
                for node in cluster.nodes:
                    status, body = await Rest(session, node.port).create("match", "in-outage")
                    assert (status, cause(body), body["leader"]) == (503, "NOT_LEADER", None)
                checks += 1
                await asyncio.sleep(0.2)
            assert len(load.acked) == acked_then
            closed_4010 = sum(host.log_path.read_text().count("code=4010") for host in hosts)
            assert closed_4010 >= AGENTS, closed_4010

            # Back: started and healthy again, or thawed.
            await asyncio.to_thread(etcd.start if outage == "stop" else etcd.resume)
            resumed = time.monotonic()
            await cluster.wait_leader(session, LEASE_S + 10)
            leader_s = time.monotonic() - resumed
            await wait_for(lambda: all_agents_on(matchmaker, hosts), BACK_WITHIN_S, step=0.05)
            agents_s = time.monotonic() - resumed
            status, uncertain, body = await matchmaker.settle("after-outage", pause_s=0.02)
            assert status == 201, (status, uncertain, body)
            create_s = time.monotonic() - resumed
            await asyncio.sleep(0.5)
            await load.stop()
        assert not watch.violations, watch.violations[:20]
        figures = await audit(matchmaker, hosts, load, AGENTS)
        report(
            f"etcd away ({outage}) {OUTAGE_S:.0f} s",
            lease_ms=LEASE_MS,
            heartbeat_ms=HEARTBEAT_MS,
            step_down_s=step_down_s,
            nobody_leads_s=nobody_s,
            outage_checks=checks,
            agents_closed_4010=closed_4010,
            leader_after_etcd_back_s=leader_s,
            agents_back_s=agents_s,
            explicit_create_s=create_s,
            **figures,
            statuses=dict(load.statuses),
        )
        assert leader_s <= LEASE_S, leader_s
        assert create_s <= BACK_WITHIN_S, create_s
