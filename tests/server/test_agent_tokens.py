"""Per-instance agent tokens (CONTRACT §13, docs/agent-tokens.md): real orchestrators,
real agents (raw and ``FleetAgent``), REST and gRPC."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from rivalis.fleet.v1 import control_pb2 as pb

from fleet_agent import RoomManager
from fleet_server import ErrorCode, FleetError
from fleet_server._agent_tokens import (
    AGENT_TOKEN_PREFIX,
    AgentTokenBook,
    agent_token_key,
)
from fleet_server._tokens import ApiTokens, Scope, encode_token
from tests.support.agents import define_rooms, fleet_agent
from tests.support.clients import AUTH, Http, control_stub, failure, handshake_status
from tests.support.keys import ADMIN, KEY
from tests.support.orchestrators import agent_url, new_orchestrator, running_orchestrator
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for

HEARTBEAT_MS = 60


def _forged(payload: dict[str, Any], admin_key: str = ADMIN) -> str:
    """A token signed as the orchestrator would, with whatever payload a test wants."""
    return encode_token(agent_token_key(admin_key), payload, AGENT_TOKEN_PREFIX)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --- the wire format -------------------------------------------------------------------


def test_wire_vector() -> None:
    """docs/agent-tokens.md §3: another language can mint and check the same token."""
    payload = {
        "v": 1,
        "id": "agt_AAAAAAAAAAAAAAAA",
        "cluster": "default",
        "iat": 1_800_000_000_000,
        "exp": 1_900_000_000_000,
        "name": "gs-1",
        "labels": {"region": "eu"},
    }
    token = _forged(payload, "admin-key-0123456789abcdef")
    assert token == VECTOR
    book = AgentTokenBook(
        ["admin-key-0123456789abcdef"], "default", clock_ms=lambda: 1_850_000_000_000
    )
    grant = book.check(VECTOR)
    assert grant is not None and (grant.id, grant.name, dict(grant.labels)) == (
        "agt_AAAAAAAAAAAAAAAA",
        "gs-1",
        {"region": "eu"},
    )
    assert AgentTokenBook(["admin-key-0123456789abcdef"], "other").check(VECTOR) is None


VECTOR = (
    "agt1.eyJjbHVzdGVyIjoiZGVmYXVsdCIsImV4cCI6MTkwMDAwMDAwMDAwMCwiaWF0IjoxODAwMDAwMDAwMDAwLCJp"
    "ZCI6ImFndF9BQUFBQUFBQUFBQUFBQUFBIiwibGFiZWxzIjp7InJlZ2lvbiI6ImV1In0sIm5hbWUiOiJncy0xIiwi"
    "diI6MX0.54ZKjn_4q5Lc5sexL-ajuJ-F_eQtj5qx2zmnUp4Dut8"
)


# --- joining with a token ---------------------------------------------------------------


async def test_a_token_agent_joins_and_its_instance_is_listed_under_the_token() -> None:
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as orch:
        minted = orch.create_agent_token(name="gs-1", labels={"region": "eu"})
        assert minted.token.startswith("agt1.") and minted.id.startswith("agt_")
        rooms = define_rooms(RoomManager(), "match")
        agent = fleet_agent(
            rooms,
            url=agent_url(orch.port),
            name="gs-1",
            key=minted.token,
            labels={"region": "eu", "zone": "a"},
        )
        await agent.connect()
        try:
            await wait_for(lambda: orch.fleet.instances)
            instance = orch.fleet.instances[0]
            assert instance.name == "gs-1" and instance.labels["zone"] == "a"  # extra labels ok
            [listed] = orch.agent_tokens()
            assert listed.id == minted.id and listed.instances == (instance.id,)
            assert listed.name == "gs-1" and dict(listed.labels) == {"region": "eu"}
            # Seat tickets for its rooms are signed with what it presented: it verifies them.
            grant = await orch.fleet.reserve_seats("match", 1, create={})
            room = rooms.get(grant.room.id)
            assert room is not None
            accepted = room.accept_ticket(grant.reservation.ticket)
            assert accepted.id == grant.reservation.id
        finally:
            await agent.disconnect()


async def test_a_first_snapshot_claiming_another_name_never_makes_the_instance_visible(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as orch:
        minted = orch.create_agent_token(name="gs-1")
        agent = RawAgent(agent_url(orch.port), key=minted.token, name="gs-2")
        async with agent:
            await wait_for(lambda: len(agent.states_sent) >= 3)
            assert orch.fleet.get_instance(agent.instance_id) is None
            assert orch.fleet.instances == []
        assert "name differs from the name its agent token binds" in caplog.text


async def test_a_changed_bound_label_is_rejected_and_the_last_good_snapshot_kept() -> None:
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as orch:
        minted = orch.create_agent_token(labels={"region": "eu"})
        agent = RawAgent(
            agent_url(orch.port),
            key=minted.token,
            labels={"region": "eu"},
            rooms={"r1": RawRoom("match", 1)},
        )
        async with agent:
            await wait_for(lambda: orch.fleet.get_instance(agent.instance_id) is not None)
            agent.labels = {"region": "us"}
            agent.rooms["r2"] = RawRoom("match", 2)  # changes ride on the rejected snapshot
            sent = len(agent.states_sent)
            await wait_for(lambda: sum(s.full for s in agent.states_sent[sent:]) >= 2)
            info = orch.fleet.get_instance(agent.instance_id)
            assert info is not None and dict(info.labels) == {"region": "eu"}
            assert orch.fleet.get_room("r2") is None and orch.fleet.get_room("r1") is not None
            agent.labels = {"region": "eu", "extra": "ok"}  # back within its binding
            await wait_for(lambda: orch.fleet.get_room("r2") is not None)


# --- revocation --------------------------------------------------------------------------


async def test_revocation_kicks_at_once_with_4011_and_refuses_reconnects() -> None:
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as orch:
        minted = orch.create_agent_token()
        other = orch.create_agent_token()
        agent = RawAgent(agent_url(orch.port), key=minted.token)
        keeps = RawAgent(agent_url(orch.port), key=other.token)
        async with agent, keeps:
            await wait_for(lambda: len(orch.fleet.instances) == 2)
            await orch.revoke_agent_token(minted.id)
            assert await agent.wait_closed() == 4011
            assert agent.close_reason == "credential revoked"
            assert [i.id for i in orch.fleet.instances] == [keeps.instance_id]
        assert await handshake_status(orch.port, minted.token) == 401
        assert await handshake_status(orch.port, other.token) == 101
        await orch.revoke_agent_token(minted.id)  # again: no error
        listed = {t.id: t for t in orch.agent_tokens()}
        assert listed[minted.id].revoked_at is not None and listed[other.id].revoked_at is None
        with pytest.raises(FleetError) as info:
            await orch.revoke_agent_token("agt_unknown")
        assert info.value.code is ErrorCode.NOT_FOUND


async def test_a_revocation_survives_a_restart_with_state_path(tmp_path: Path) -> None:
    state = tmp_path / "fleet-state.json"
    first = new_orchestrator(state_path=str(state), heartbeat_ms=HEARTBEAT_MS, settle_ms=0)
    await first.listen()
    try:
        revoked = first.create_agent_token(name="gs-1")
        kept = first.create_agent_token(name="gs-2")
        await first.revoke_agent_token(revoked.id)  # answers once stored
        assert revoked.id in state.read_text()
        assert revoked.token not in state.read_text()  # never the token itself
    finally:
        await first.shutdown()
    second = new_orchestrator(state_path=str(state), heartbeat_ms=HEARTBEAT_MS, settle_ms=0)
    await second.listen()
    try:
        assert await handshake_status(second.port, revoked.token) == 401
        assert await handshake_status(second.port, kept.token) == 101
        listed = {t.id: t for t in second.agent_tokens()}
        assert listed[revoked.id].revoked_at is not None and listed[kept.id].name == "gs-2"
    finally:
        await second.shutdown()


async def test_a_token_minted_before_a_restart_without_a_store_is_learnt_when_it_joins() -> None:
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as first:
        minted = first.create_agent_token(name="raw")
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as second:
        assert second.agent_tokens() == []
        async with RawAgent(agent_url(second.port), key=minted.token) as agent:
            await wait_for(lambda: second.fleet.get_instance(agent.instance_id) is not None)
            assert [t.id for t in second.agent_tokens()] == [minted.id]


# --- refusals ----------------------------------------------------------------------------


async def test_token_only_mode_refuses_every_key_and_admits_tokens() -> None:
    async with running_orchestrator(
        heartbeat_ms=HEARTBEAT_MS, agent_key=[], admin_key=ADMIN
    ) as orch:
        assert await handshake_status(orch.port, KEY) == 401
        assert await handshake_status(orch.port, ADMIN) == 401
        minted = orch.create_agent_token()
        assert await handshake_status(orch.port, minted.token) == 101


async def test_hostile_tokens_are_refused_uniformly_and_count_toward_the_throttle() -> None:
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS, auth_failure_limit=6) as orch:
        minted = orch.create_agent_token()
        good = {
            "v": 1,
            "id": "agt_hostile0000000000",
            "cluster": "default",
            "iat": 1,
            "exp": 4_102_444_800_000,
        }
        hostile = [
            minted.token[:-4],  # truncated
            minted.token.rsplit(".", 1)[0] + ".AAAA",  # its tag replaced
            _forged(good, admin_key="another-admin-key-0123456789"),  # re-signed
            _forged({**good, "cluster": "other"}),  # another cluster, same admin key
            _forged({**good, "exp": 1_000}),  # expired
        ]
        for token in hostile:
            assert await handshake_status(orch.port, token) == 401
        assert await handshake_status(orch.port, minted.token) == 101
        assert await handshake_status(orch.port, hostile[0]) == 401  # the sixth failure
        assert await handshake_status(orch.port, minted.token) == 429  # throttled now
        assert orch.fleet.instances == []


async def test_api_tokens_are_not_agent_tokens_and_tokens_off_refuses_them() -> None:
    agent_token = AgentTokenBook([ADMIN], "default").mint().token
    api_token = ApiTokens([ADMIN]).mint(Scope.ADMIN).token
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS, agent_tokens=False) as orch:
        assert await handshake_status(orch.port, agent_token) == 401
        with pytest.raises(FleetError) as info:
            orch.create_agent_token()
        assert info.value.code is ErrorCode.FORBIDDEN
        assert orch.agent_tokens() == []
    async with running_orchestrator(heartbeat_ms=HEARTBEAT_MS) as orch:
        assert await handshake_status(orch.port, api_token) == 401
        assert await handshake_status(orch.port, agent_token) == 101  # same admin key


def test_bad_bindings_are_validation_errors_and_mint_nothing() -> None:
    orch = new_orchestrator()
    for kwargs in (
        {"name": ""},
        {"name": "n" * 65},
        {"labels": {"k" * 65: "v"}},
        {"labels": {"k": "v" * 65}},
        {"labels": {f"k{n}": "v" for n in range(33)}},
        {"ttl_s": 59},
        {"ttl_s": 31_536_001},
    ):
        with pytest.raises(FleetError) as info:
            orch.create_agent_token(**kwargs)
        assert info.value.code is ErrorCode.VALIDATION, kwargs
    assert orch.agent_tokens() == []


# --- REST and gRPC -----------------------------------------------------------------------


async def test_rest_mints_lists_without_secrets_and_revokes(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleet")
    async with running_orchestrator(api=True, heartbeat_ms=HEARTBEAT_MS) as orch:
        api = Http(http, orch.port)
        minted = await api.post(
            "/v1/agent-tokens", json={"name": "gs-1", "labels": {"region": "eu"}, "ttlS": 3600}
        )
        assert minted.status == 201 and minted.headers["Cache-Control"] == "no-store"
        data = minted.json["data"]
        assert set(data) == {"id", "token", "expiresAt"}
        bare = await api.post("/v1/agent-tokens")  # no body: the defaults
        assert bare.status == 201
        async with RawAgent(
            agent_url(orch.port), key=data["token"], name="gs-1", labels={"region": "eu"}
        ) as agent:
            await wait_for(lambda: orch.fleet.get_instance(agent.instance_id) is not None)
            listed = await api.get("/v1/agent-tokens")
            assert listed.status == 200 and listed.json["count"] == 2
            assert data["token"] not in listed.body.decode()
            first = listed.json["data"][0]
            assert first == {
                "id": data["id"],
                "name": "gs-1",
                "labels": {"region": "eu"},
                "createdAt": first["createdAt"],
                "expiresAt": data["expiresAt"],
                "revokedAt": None,
                "instances": [agent.instance_id],
            }
            assert (await api.delete(f"/v1/agent-tokens/{data['id']}")).status == 200
            assert await agent.wait_closed() == 4011
        assert (await api.delete("/v1/agent-tokens/agt_nope")).status == 404
        for bad in (
            {"nope": 1},
            {"name": 3},
            {"labels": ["a"]},
            {"labels": {"a": 1}},
            {"ttlS": "60"},
            {"ttlS": 10},
            {"name": "x" * 65},
        ):
            reply = await api.post("/v1/agent-tokens", json=bad)
            assert reply.status == 400 and reply.json["cause"] == "VALIDATION", bad
        token = (await api.post("/v1/tokens", json={"scope": "admin"})).json["data"]["token"]
        assert (await api.post("/v1/agent-tokens", key=token)).status == 201  # as the key
        assert (await api.get("/v1/agent-tokens", key=token)).status == 200
        read = (await api.post("/v1/tokens", json={"scope": "read"})).json["data"]["token"]
        assert (await api.post("/v1/agent-tokens", key=read)).status == 403
        assert (await api.delete(f"/v1/agent-tokens/{data['id']}", key=read)).status == 403
    text = caplog.text
    assert data["token"] not in text and data["token"][:40] not in text
    assert f"agent token minted id={data['id']} fingerprint=agt#" in text
    assert f"agent token revoked id={data['id']} kicked=1" in text
    assert f"token={data['id']}" in text  # the agent's connect line names the token by id


async def test_grpc_creates_lists_and_revokes() -> None:
    async with running_orchestrator(api=True, grpc_port=0, heartbeat_ms=HEARTBEAT_MS) as orch:
        async with control_stub(orch.grpc_port) as stub:
            minted = await stub.CreateAgentToken(
                pb.CreateAgentTokenRequest(name="gs-1", labels={"region": "eu"}, ttl_s=600),
                metadata=AUTH,
            )
            assert minted.id.startswith("agt_") and minted.token.startswith("agt1.")
            listed = await stub.ListAgentTokens(pb.ListAgentTokensRequest(), metadata=AUTH)
            [row] = listed.tokens
            assert (row.id, row.name, dict(row.labels)) == (minted.id, "gs-1", {"region": "eu"})
            assert not row.HasField("revoked_at")
            assert row.expires_at == minted.expires_at
            await stub.RevokeAgentToken(pb.RevokeAgentTokenRequest(id=minted.id), metadata=AUTH)
            [row] = (await stub.ListAgentTokens(pb.ListAgentTokensRequest(), metadata=AUTH)).tokens
            assert row.HasField("revoked_at")
            code, cause = await failure(
                stub.RevokeAgentToken(pb.RevokeAgentTokenRequest(id="agt_nope"), metadata=AUTH)
            )
            assert (code, cause) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
            code, cause = await failure(
                stub.CreateAgentToken(pb.CreateAgentTokenRequest(ttl_s=5), metadata=AUTH)
            )
            assert (code, cause) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION")
        assert await handshake_status(orch.port, minted.token) == 401
