"""POST /v1/tokens and API tokens on REST and SSE: scopes, FORBIDDEN, expiry, rotation,
and never a token or key in a log line (CONTRACT §12, docs/tokens-and-metrics.md §1)."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import pytest

from fleet_server._tokens import encode_token, token_fingerprint, token_key
from tests.support.keys import ADMIN
from tests.support.raw_agent import RawRoom

from .support import Gateway, SseReader, running_gateway

NEW_ADMIN = "admin-key-rotated-0123456789"


async def mint(gw: Gateway, scope: str = "read", key: str = ADMIN, **body: Any) -> str:
    reply = await gw.post("/v1/tokens", key=key, json={"scope": scope, **body})
    assert reply.status == 201, reply.body
    token: str = reply.data["token"]
    return token


def signed(key: str, scope: str, exp_ms: int) -> str:
    jti = secrets.token_urlsafe(16)
    return encode_token(token_key(key), {"v": 1, "scope": scope, "exp": exp_ms, "jti": jti})


async def test_an_admin_key_mints_tokens_of_both_scopes(gw: Gateway) -> None:
    before = int(time.time() * 1000)
    reply = await gw.post("/v1/tokens", json={"scope": "read"})
    assert reply.status == 201
    assert reply.headers["Cache-Control"] == "no-store"
    data = reply.data
    assert set(data) == {"token", "scope", "expiresAt"} and data["scope"] == "read"
    assert data["token"].startswith("at1.")
    assert before + 3_600_000 <= data["expiresAt"] <= int(time.time() * 1000) + 3_600_000
    admin = (await gw.post("/v1/tokens", json={"scope": "admin", "ttlS": 60})).data
    assert admin["scope"] == "admin"
    assert admin["expiresAt"] <= int(time.time() * 1000) + 60_000


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"scope": "write"},
        {"scope": None},
        {"scope": "read", "ttlS": 59},
        {"scope": "read", "ttlS": 86_401},
        {"scope": "read", "ttlS": 60.5},
        {"scope": "read", "ttlS": True},
        {"scope": "read", "ttlS": "3600"},
        {"scope": "read", "extra": 1},
        ["read"],
    ],
)
async def test_a_bad_token_request_is_validation(gw: Gateway, body: Any) -> None:
    reply = await gw.post("/v1/tokens", json=body)
    assert (reply.status, reply.cause) == (400, "VALIDATION")


async def test_a_read_token_reads_and_is_forbidden_everything_else(gw: Gateway) -> None:
    agent = await gw.agent(name="eu1", rooms={"r1": RawRoom("match", 2)})
    token = await mint(gw, "read")
    for path in (
        "/v1/stats",
        "/v1/instances",
        f"/v1/instances/{agent.instance_id}",
        f"/v1/instances/{agent.instance_id}/rooms",
        "/v1/rooms",
        "/v1/rooms/r1",
        "/v1/cluster",
    ):
        assert (await gw.get(path, key=token)).status == 200, path
    writes = [
        ("POST", "/v1/rooms", {"type": "match"}),
        ("DELETE", "/v1/rooms/r1", None),
        ("POST", f"/v1/instances/{agent.instance_id}/drain", None),
        ("POST", f"/v1/instances/{agent.instance_id}/undrain", None),
        ("POST", "/v1/seats", {"type": "match"}),
        ("DELETE", "/v1/seats/s_1", None),
        ("POST", "/v1/tokens", {"scope": "read"}),
    ]
    for method, path, body in writes:
        reply = await gw.request(method, path, key=token, json=body)
        assert (reply.status, reply.cause) == (403, "FORBIDDEN"), (method, path)
    assert agent.commands == []  # nothing reached the game server
    assert (await gw.get("/v1/rooms/r1")).status == 200


async def test_an_admin_token_acts_but_cannot_mint(gw: Gateway) -> None:
    agent = await gw.agent()
    token = await mint(gw, "admin")
    created = await gw.post("/v1/rooms", key=token, json={"type": "match", "roomId": "m1"})
    assert created.status == 201 and created.data["instanceId"] == agent.instance_id
    assert (await gw.delete("/v1/rooms/m1", key=token)).status == 200
    for scope in ("read", "admin"):
        refused = await gw.post("/v1/tokens", key=token, json={"scope": scope})
        assert (refused.status, refused.cause) == (403, "FORBIDDEN")


async def test_expired_and_forged_tokens_are_unauthorized(gw: Gateway) -> None:
    now = int(time.time() * 1000)
    for token in (
        signed(ADMIN, "admin", now - 1),  # expired
        signed("some-other-admin-key-0123", "admin", now + 60_000),  # a key never listed
        (await mint(gw, "read"))[:-4] + "AAAA",  # tampered tag
        "at1.e30.AAAA",
    ):
        reply = await gw.get("/v1/stats", key=token)
        assert (reply.status, reply.cause) == (401, "UNAUTHORIZED")


async def test_a_token_lives_while_its_signing_key_is_listed() -> None:
    async with running_gateway(admin_key=[ADMIN]) as first:
        token = await mint(first)
    async with running_gateway(admin_key=[NEW_ADMIN, ADMIN]) as rotated:
        assert (await rotated.get("/v1/stats", key=token)).status == 200
        fresh = await mint(rotated, key=ADMIN)  # signed with NEW_ADMIN, the first key
    async with running_gateway(admin_key=[NEW_ADMIN]) as dropped:
        reply = await dropped.get("/v1/stats", key=token)
        assert (reply.status, reply.cause) == (401, "UNAUTHORIZED")
        assert (await dropped.get("/v1/stats", key=fresh)).status == 200


async def test_sse_takes_a_token_as_bearer_or_query_whatever_sse_query_auth_says(
    gw: Gateway,
) -> None:
    assert gw.orch.options.sse_query_auth is False
    token = await mint(gw, "read")
    async with gw.session.get(gw.url(f"/v1/events?token={token}")) as stream:
        assert stream.status == 200
        events = SseReader(stream)
        assert await events.frame() == [": connected"]
        agent = await gw.agent(name="eu1")
        assert (await events.event("instance:join"))["id"] == agent.instance_id
    async with gw.session.get(gw.url("/v1/events"), headers=gw.auth(token)) as stream:
        assert stream.status == 200
    for query in (f"?key={ADMIN}", f"?token={ADMIN}", "?token=at1.e30.AAAA"):
        reply = await gw.get("/v1/events" + query, key=None)
        assert (reply.status, reply.cause) == (401, "UNAUTHORIZED"), query
    # ?token= is for the event stream only
    reply = await gw.get(f"/v1/stats?token={token}", key=None)
    assert (reply.status, reply.cause) == (401, "UNAUTHORIZED")


async def test_no_token_or_key_reaches_a_log_line_and_audits_name_the_fingerprint(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleet")
    agent = await gw.agent()
    read = await mint(gw, "read")
    admin = await mint(gw, "admin")
    expired = signed(ADMIN, "admin", 1)
    await gw.post("/v1/rooms", key=admin, json={"type": "match", "roomId": "m1"})
    await gw.post("/v1/rooms", key=read, json={"type": "match"})
    await gw.post(f"/v1/instances/{agent.instance_id}/drain", key=expired)
    await gw.get("/v1/stats", key=expired)
    await gw.get(f"/v1/events?token={expired}", key=None)
    await gw.get(f"/v1/events?key={ADMIN}", key=None)
    await gw.post("/v1/tokens", key=read, json={"scope": "admin"})
    audits = [r.getMessage() for r in caplog.records if r.name == "fleet.audit"]
    line = "audit route={} key={} ip=127.0.0.1 outcome={}".format
    assert line("POST /v1/rooms", token_fingerprint(admin), 201) in audits
    assert line("POST /v1/rooms", token_fingerprint(read), 403) in audits
    assert line("POST /v1/tokens", token_fingerprint(read), 403) in audits
    secrets_seen = [ADMIN, read, admin, expired]
    for record in caplog.records:
        message = record.getMessage()
        for secret in secrets_seen:
            assert secret not in message, (record.name, message)
            for part in secret.split("."):
                assert len(part) < 12 or part not in message, (record.name, message)
