"""The leader frozen with SIGSTOP past its lease, then thawed with SIGCONT, under create
load (CONTRACT §10).

While it is frozen its agents get no polls; each drops it after three heartbeats and
moves on to the other nodes, and once the lease has expired a standby leads and takes
them all. A create sent to the frozen leader waits in its socket. Thawed, the old
leader must not act as one: that waiting create is refused ``NOT_LEADER``, its
``/v1/cluster`` says ``standby`` from its first answer on and names the new leader, it
refuses creates and agents, it never logs taking the lead, and every agent stays on the
new leader. Every agent is on the new leader within 10 s of the stop. No room is lost
or duplicated.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from fleet_agent import wire
from tests.support.clients import Rest, cause
from tests.support.etcd import EtcdServer
from tests.support.figures import report
from tests.support.keys import KEY
from tests.support.waits import wait_for

from .cluster import (
    LEASE_MS,
    CreateLoad,
    Matchmaker,
    all_agents_on,
    audit,
    running_cluster,
    start_agents,
)
from .support import RoomWatch, agent_processes

AGENTS = 20
HEARTBEAT_MS = 250
LEASE_S = LEASE_MS / 1000
BACK_WITHIN_S = 10.0  # every agent on the new leader, from the stop
WATCH_AFTER_THAW_S = 1.5  # how long the thawed node is watched


async def upgrade_refusal(session: aiohttp.ClientSession, agent_url: str) -> tuple[int, str]:
    """The status and ``Fleet-Leader`` header with which ``agent_url`` refuses an agent."""
    try:
        ws = await session.ws_connect(agent_url, protocols=(wire.SUBPROTOCOL, KEY))
    except aiohttp.WSServerHandshakeError as exc:
        leader = exc.headers.get("Fleet-Leader", "") if exc.headers is not None else ""
        return exc.status, leader
    await ws.close()
    return 101, ""


@pytest.mark.timeout(120)
async def test_a_leader_frozen_past_its_lease_never_leads_again_after_sigcont(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    """SIGSTOP the leader under create load until a standby has led past its lease, then
    SIGCONT: the create queued in its socket is refused ``NOT_LEADER``; it says standby,
    names the new leader, refuses creates and agents and never takes the lead; every
    agent is on the new leader within 10 s of the stop; nothing lost or duplicated."""
    async with (
        running_cluster(etcd, tmp_path, heartbeat_ms=HEARTBEAT_MS) as cluster,
        aiohttp.ClientSession() as session,
        # A connection of its own per request: a pooled one, idle past the daemon's
        # keep-alive timeout by the thaw, would be closed under the queued request.
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
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
        assert {host.latest(slot).url for host in hosts for slot in host.slots()} == {old.agent_url}
        load = CreateLoad(matchmaker, "f", rate=50, workers=5)
        direct = Rest(fresh, old.port)
        async with RoomWatch(Matchmaker(session, cluster).rooms, 0.5) as watch:
            load.start()
            await asyncio.sleep(1.0)
            assert old.daemon is not None
            old.daemon.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            # Sent to the frozen leader: it waits in the socket until the thaw.
            queued = asyncio.ensure_future(
                direct.call("POST", "/v1/rooms", {"type": "match", "roomId": "queued"}, 30)
            )
            new = await cluster.wait_leader(session, LEASE_S + 5)
            failover_s = time.monotonic() - stopped
            assert new is not old
            await wait_for(lambda: all_agents_on(matchmaker, hosts), 10, step=0.05)
            agents_s = time.monotonic() - stopped
            assert agents_s <= BACK_WITHIN_S, agents_s
            await asyncio.sleep(max(0.0, stopped + LEASE_S + 1 - time.monotonic()))

            log_offset = old.log_path.stat().st_size
            old.daemon.signal(signal.SIGCONT)
            thawed = time.monotonic()
            status, body = await queued
            assert (status, cause(body)) == (503, "NOT_LEADER"), (status, body)
            answered_ms = (time.monotonic() - thawed) * 1000

            # Watched for a while: a standby that names the new leader, refusing all.
            roles: set[str] = set()
            named: set[str | None] = set()
            while time.monotonic() - thawed < WATCH_AFTER_THAW_S:
                info = await cluster.info(session, old)
                assert info is not None
                roles.add(info["role"])
                named.add(info["leader"]["url"] if info["leader"] else None)
                await asyncio.sleep(0.02)
            assert roles == {"standby"}, roles
            assert named <= {new.url, None}, named
            status, body = await direct.call(
                "POST", "/v1/rooms", {"type": "match", "roomId": "after-thaw"}
            )
            assert (status, cause(body), body.get("leader")) == (503, "NOT_LEADER", new.url)
            assert await upgrade_refusal(session, old.agent_url) == (503, new.agent_url)
            assert "leading cluster" not in old.daemon.log(log_offset)
            assert await cluster.leader(session) is new
            latest = {host.latest(slot).url for host in hosts for slot in host.slots()}
            assert latest == {new.agent_url}, latest
            await load.stop()
        assert not watch.violations, watch.violations[:20]
        figures = await audit(matchmaker, hosts, load, AGENTS)
        assert "queued" not in load.acked
        report(
            "leader SIGSTOP past its lease, then SIGCONT",
            lease_ms=LEASE_MS,
            heartbeat_ms=HEARTBEAT_MS,
            failover_s=failover_s,
            agents_on_new_leader_s=agents_s,
            frozen_s=thawed - stopped,
            queued_create_refused_after_thaw_ms=answered_ms,
            **figures,
            statuses=dict(load.statuses),
        )
