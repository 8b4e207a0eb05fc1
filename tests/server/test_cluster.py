"""Roles on every surface (CONTRACT §10): single, leader and standby, against a real etcd.

A standby answers ``/healthz`` and ``/v1/cluster``; everything else, the agent upgrade
and gRPC included, is refused with ``NOT_LEADER`` and the leader's address in the form
of that surface. A new leader loads the membership record from etcd and settles.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_agent import wire
from fleet_server import ErrorCode, FleetError, Orchestrator
from tests.support.agents import RawAgents
from tests.support.clients import AUTH, Http, control_stub, grpc_cause, handshake_status
from tests.support.etcd import EtcdServer
from tests.support.keys import KEY
from tests.support.orchestrators import agent_url, new_orchestrator
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

LEASE_MS = 2000
TAKEOVER_S = LEASE_MS / 1000 + 5  # the lease, plus generous room for a loaded machine


@contextlib.asynccontextmanager
async def nodes(etcd: EtcdServer, count: int, **options: Any) -> AsyncIterator[list[Orchestrator]]:
    """``count`` orchestrators on one etcd, API and gRPC on; shut down on exit."""
    options.setdefault("heartbeat_ms", 200)
    started: list[Orchestrator] = []
    try:
        for _ in range(count):
            orch = new_orchestrator(
                api=True,
                grpc_port=0,
                etcd_endpoints=[etcd.endpoint],
                cluster="test",
                leader_lease_ms=LEASE_MS,
                **options,
            )
            await orch.listen()
            started.append(orch)
        yield started
    finally:
        for orch in started:
            await orch.shutdown()


async def leader_of(group: list[Orchestrator], timeout: float = TAKEOVER_S) -> Orchestrator:
    await wait_for(lambda: sum(o._cluster.leads() for o in group) == 1, timeout)
    return next(o for o in group if o._cluster.leads())


async def _equal(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _cluster(http: Http) -> dict[str, Any]:
    reply = await http.get("/v1/cluster")
    assert reply.status == 200, reply.body
    data: dict[str, Any] = reply.json["data"]
    return data


async def test_a_node_alone_is_single_and_leads_itself() -> None:
    orch = new_orchestrator(api=True, grpc_port=0)
    await orch.listen()
    try:
        async with aiohttp.ClientSession() as session:
            info = await _cluster(Http(session, orch.port))
        assert info["role"] == "single"
        assert info["settled"] is True
        assert info["leader"]["url"] == f"http://127.0.0.1:{orch.port}"
        assert info["leader"]["agentUrl"] == f"ws://127.0.0.1:{orch.port}/"
        assert info["leader"]["grpcUrl"] == f"127.0.0.1:{orch.grpc_port}"
        assert info["members"] == [
            {"id": info["leader"]["id"], "url": info["leader"]["url"], "role": "single"}
        ]
        async with control_stub(orch.grpc_port) as stub:
            message = await stub.GetCluster(pb.GetClusterRequest(), metadata=AUTH)
        assert (message.role, message.settled) == ("single", True)
        assert message.leader.id == info["leader"]["id"]
    finally:
        await orch.shutdown()


async def test_one_leader_and_a_standby_that_sends_everyone_to_it(etcd: EtcdServer) -> None:
    async with nodes(etcd, 2) as group, aiohttp.ClientSession() as session:
        leader = await leader_of(group)
        standby = next(o for o in group if o is not leader)
        lead_url = f"http://127.0.0.1:{leader.port}"
        http = Http(session, standby.port)
        await wait_for(lambda: standby._cluster.leader_hint("api") == lead_url, TAKEOVER_S)

        info = await _cluster(http)
        assert info["role"] == "standby"
        assert info["leader"]["url"] == lead_url
        assert info["settled"] is False

        async def roles() -> list[str]:
            return sorted(m["role"] for m in (await _cluster(http))["members"])

        # The leader rewrites its member key as "leader" just after it took the lead.
        await wait_for(lambda: _equal(roles(), ["leader", "standby"]), TAKEOVER_S)
        assert (await _cluster(Http(session, leader.port)))["role"] == "leader"

        assert (await http.get("/healthz")).status == 200
        for method, path in (("GET", "/readyz"), ("GET", "/v1/stats"), ("POST", "/v1/rooms")):
            reply = await http.request(method, path, json={"type": "match"})
            assert reply.status == 503, (path, reply.body)
            assert reply.json == {"status": "rejected", "cause": "NOT_LEADER", "leader": lead_url}
            assert reply.headers["Fleet-Leader"] == lead_url
        assert (await http.get("/v1/openapi.json")).status == 200

        # The agent upgrade: 503 with the leader's agent URL.
        upgrade = await session.get(
            agent_url(standby.port),
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Protocol": f"{wire.SUBPROTOCOL}, {KEY}",
            },
        )
        assert upgrade.status == 503
        body = await upgrade.json()
        assert body == {
            "status": "rejected",
            "cause": "NOT_LEADER",
            "leader": agent_url(leader.port),
        }
        assert upgrade.headers["Fleet-Leader"] == agent_url(leader.port)

        async with control_stub(standby.grpc_port) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as info_error:
                await stub.GetStats(pb.GetStatsRequest(), metadata=AUTH)
            assert info_error.value.code() is grpc.StatusCode.UNAVAILABLE
            assert grpc_cause(info_error.value) == "NOT_LEADER"
            trailing = dict(info_error.value.trailing_metadata() or ())
            assert trailing["fleet-leader"] == f"127.0.0.1:{leader.grpc_port}"
            cluster = await stub.GetCluster(pb.GetClusterRequest(), metadata=AUTH)
            assert cluster.role == "standby"
            assert cluster.leader.url == lead_url

        with pytest.raises(FleetError) as python_api:
            await standby.fleet.create_room("match")
        assert python_api.value.code is ErrorCode.NOT_LEADER


async def test_a_new_leader_loads_the_holds_from_etcd_and_settles(etcd: EtcdServer) -> None:
    async with nodes(etcd, 2, settle_ms=60_000) as group:
        first = await leader_of(group)
        second = next(o for o in group if o is not first)
        async with RawAgents(first) as agents:
            agent = await agents.join(rooms={"m-1": RawRoom("match", 2, origin="fleet")})
            await agent.close(code=1001)  # cut: m-1 is held for the process
            await wait_for(lambda: "m-1" in first.fleet.orphans)
            await asyncio.sleep(0.8)  # the record reaches etcd within a second
        await first.shutdown()  # resigns: the standby takes over at once
        assert await leader_of([second]) is second
        await wait_for(lambda: "m-1" in second.fleet.orphans, 5)
        assert not second.fleet.roster.settled
        async with RawAgents(second) as agents:
            await agents.join(name="newcomer")
            with pytest.raises(FleetError) as settling:
                await second.fleet.create_room("match", room_id="m-2")
            assert settling.value.code is ErrorCode.NOT_READY
            await second.fleet.create_room("match")  # generated ids never wait
            back = await agents.join(process_uid=agent.process_uid)
            assert second.fleet.roster.settled
            assert "m-1" not in second.fleet.orphans
            room = await second.fleet.create_room("match", room_id="m-1")
            assert room.instance_id in {back.instance_id, agents.agents[0].instance_id}


async def test_a_leader_that_loses_etcd_steps_down_and_closes_its_agents_with_4010(
    etcd: EtcdServer,
) -> None:
    async with nodes(etcd, 1) as group, aiohttp.ClientSession() as session:
        leader = await leader_of(group)
        http = Http(session, leader.port)
        async with (
            RawAgents(leader) as agents,
            session.get(http.url("/v1/events"), headers=http.auth()) as stream,
        ):
            assert stream.status == 200
            agent = await agents.join()
            etcd.pause()
            try:
                await wait_for(lambda: not leader._cluster.leads(), LEASE_MS / 1000 + 2)
                assert await agent.wait_closed(timeout=5) == 4010
                assert agent.close_reason == "not leader"
                # The event stream ends too: its client reconnects and is sent on.
                await asyncio.wait_for(stream.content.read(), 5)
                assert stream.content.at_eof()
                with pytest.raises(FleetError) as info:
                    await leader.fleet.create_room("match")
                assert info.value.code is ErrorCode.NOT_LEADER
            finally:
                etcd.resume()
            await wait_for(lambda: leader._cluster.leads(), TAKEOVER_S + 5)


async def test_a_revocation_stored_in_etcd_holds_on_the_new_leader(etcd: EtcdServer) -> None:
    async with nodes(etcd, 2) as group:
        first = await leader_of(group)
        second = next(o for o in group if o is not first)
        revoked = first.create_agent_token(name="raw")
        kept = first.create_agent_token(name="raw")
        await first.revoke_agent_token(revoked.id)  # answers once the record is in etcd
        with pytest.raises(FleetError) as standby:
            second.create_agent_token()
        assert standby.value.code is ErrorCode.NOT_LEADER
        await first.shutdown()
        assert await leader_of([second]) is second
        await wait_for(lambda: len(second.agent_tokens()) == 2, 5)
        assert await handshake_status(second.port, revoked.token) == 401
        assert await handshake_status(second.port, kept.token) == 101
        assert {t.id: t.revoked_at is not None for t in second.agent_tokens()} == {
            revoked.id: True,
            kept.id: False,
        }
