"""Admin-key auth, the failed-auth throttle, client IPs, audit lines, key hygiene (SPEC §12)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re

import aiohttp
import pytest
from aiohttp import web

import gateway._middleware as middleware
from fleet_server._auth import AuthThrottle, KeyRing, fingerprint
from tests.support.clients import Reply
from tests.support.keys import ADMIN, KEY
from tests.support.raw_agent import RawAgent, RawRoom

from .support import Gateway, SseReader, running_gateway

UNAUTHORIZED = b'{"status":"rejected","cause":"UNAUTHORIZED"}'


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fleet.audit"]


async def handshake(gw: Gateway, protocols: str, ip: str | None = None) -> Reply:
    """A WebSocket upgrade request to the agent endpoint, answered over plain HTTP."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Protocol": protocols,
    }
    if ip is not None:
        headers["X-Forwarded-For"] = ip
    return await gw.get("/", key=None, headers=headers)


async def test_stats_needs_the_admin_key(gw: Gateway) -> None:
    for key in (None, "not-the-admin-key-0123456789"):
        reply = await gw.get("/v1/stats", key=key)
        assert reply.status == 401 and reply.body == UNAUTHORIZED
    assert (await gw.get("/v1/stats")).status == 200


async def test_the_bearer_scheme_is_case_insensitive_and_other_schemes_fail(gw: Gateway) -> None:
    for header in (f"bearer {ADMIN}", f"BEARER   {ADMIN}", f"Bearer {ADMIN} "):
        assert (
            await gw.get("/v1/stats", key=None, headers={"Authorization": header})
        ).status == 200
    for header in (f"Basic {ADMIN}", ADMIN, f"Bearer{ADMIN}", "Bearer ", f"Token {ADMIN}"):
        reply = await gw.get("/v1/stats", key=None, headers={"Authorization": header})
        assert reply.status == 401, header


async def test_every_auth_failure_has_the_same_401_body(gw: Gateway) -> None:
    bodies = {
        "missing": (await gw.get("/v1/rooms", key=None)).body,
        "unknown": (await gw.get("/v1/rooms", key="unknown-key-0123456789abcdef")).body,
        "agent key": (await gw.get("/v1/rooms", key=KEY)).body,
        "basic": (await gw.get("/v1/rooms", key=None, headers={"Authorization": "Basic x"})).body,
        "sse": (await gw.get("/v1/events", key="unknown-key-0123456789abcdef")).body,
        "sse query": (await gw.get(f"/v1/events?key={ADMIN}", key=None)).body,
        "agent endpoint": (await handshake(gw, f"rivalis-fleet.v1, {ADMIN}")).body,
    }
    assert set(bodies.values()) == {UNAUTHORIZED}, bodies


async def test_ten_failures_are_401_then_429_even_for_a_valid_key(gw: Gateway) -> None:
    for attempt in range(10):
        reply = await gw.get("/v1/stats", key=f"wrong-{attempt}-0123456789abcdef")
        assert reply.status == 401, attempt
    for key in ("wrong-0123456789abcdef", ADMIN):
        reply = await gw.get("/v1/stats", key=key)
        assert (reply.status, reply.cause) == (429, "AUTH_THROTTLED")
    assert (await gw.get("/v1/events")).cause == "AUTH_THROTTLED"
    assert (await gw.post("/v1/rooms", json={"type": "match"})).cause == "AUTH_THROTTLED"
    assert (await handshake(gw, f"rivalis-fleet.v1, {KEY}")).cause == "AUTH_THROTTLED"


async def test_trusted_proxy_addresses_throttle_and_audit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fleet.audit")
    async with running_gateway(trust_proxy=True) as gw:
        await gw.agent(rooms={"r1": RawRoom("match")})
        blocked = {"X-Forwarded-For": "9.9.9.9, 10.0.0.1"}
        for _ in range(10):
            assert (await gw.get("/v1/stats", key=None, headers=blocked)).status == 401
        assert (await gw.get("/v1/stats", headers=blocked)).cause == "AUTH_THROTTLED"
        other = await gw.get("/v1/stats", key=None, headers={"X-Forwarded-For": "8.8.8.8"})
        assert other.cause == "UNAUTHORIZED"
        deleted = await gw.delete("/v1/rooms/r1", headers={"X-Forwarded-For": "7.7.7.7"})
        assert deleted.status == 200
    assert any("ip=7.7.7.7 outcome=200" in line for line in audit_lines(caplog))


async def test_without_trust_proxy_forwarded_addresses_are_ignored(gw: Gateway) -> None:
    for _ in range(10):
        reply = await gw.get("/v1/stats", key=None, headers={"X-Forwarded-For": "1.1.1.1"})
        assert reply.status == 401
    reply = await gw.get("/v1/stats", key=None, headers={"X-Forwarded-For": "2.2.2.2"})
    assert reply.cause == "AUTH_THROTTLED"


async def test_throttle_buckets_are_pruned_and_capped() -> None:
    async with running_gateway(trust_proxy=True) as gw:
        now = [0.0]
        auth = gw.orch._auth
        auth.throttle = AuthThrottle(10, 100, clock=lambda: now[0])

        async def fail_from(ip: str) -> None:
            reply = await gw.get("/v1/stats", key=None, headers={"X-Forwarded-For": ip})
            assert reply.status == 401

        await asyncio.gather(*(fail_from(f"10.0.{i // 250}.{i % 250}") for i in range(500)))
        assert len(auth.throttle) == 500
        now[0] += 0.25  # two windows: every bucket has refilled
        await fail_from("10.9.9.9")
        assert len(auth.throttle) == 1

        auth.throttle = AuthThrottle(10, 60_000, max_buckets=3)
        for i in range(50):
            await fail_from(f"10.1.0.{i}")
        assert len(auth.throttle) <= 3


async def test_control_routes_write_an_audit_line_with_the_key_fingerprint(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = await gw.agent(rooms={"r1": RawRoom("match")})
    fp = "key#" + hashlib.sha256(ADMIN.encode()).hexdigest()[:8]
    assert (await gw.delete("/v1/rooms/r1")).status == 200
    assert (await gw.post("/v1/rooms", json={"type": "match", "roomId": "m1"})).status == 201
    assert (await gw.post(f"/v1/instances/{agent.instance_id}/drain")).status == 200
    assert (await gw.post(f"/v1/instances/{agent.instance_id}/undrain")).status == 200
    assert (await gw.delete("/v1/rooms/m1", key=KEY)).status == 401
    assert (await gw.delete("/v1/rooms/missing")).status == 404
    assert (await gw.get("/v1/rooms")).status == 200  # reads are not audited
    i = agent.instance_id
    assert audit_lines(caplog) == [
        f"audit route=DELETE /v1/rooms/r1 key={fp} ip=127.0.0.1 outcome=200",
        f"audit route=POST /v1/rooms key={fp} ip=127.0.0.1 outcome=201",
        f"audit route=POST /v1/instances/{i}/drain key={fp} ip=127.0.0.1 outcome=200",
        f"audit route=POST /v1/instances/{i}/undrain key={fp} ip=127.0.0.1 outcome=200",
        "audit route=DELETE /v1/rooms/m1 key=unknown ip=127.0.0.1 outcome=401",
        f"audit route=DELETE /v1/rooms/missing key={fp} ip=127.0.0.1 outcome=404",
    ]
    for record in caplog.records:
        assert ADMIN not in record.getMessage() and KEY not in record.getMessage()


async def test_no_key_appears_in_any_log_line_or_response(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drive every failure path (and the successes) and search everything for key material."""
    caplog.set_level(logging.DEBUG)
    second_admin = "second-admin-key-fedcba9876543210"
    keys = (ADMIN, second_admin, KEY)
    replies: list[Reply] = []
    for query_auth in (False, True):
        async with running_gateway(
            admin_key=[ADMIN, second_admin],
            trust_proxy=True,
            sse_query_auth=query_auth,
            sse_stream_limit=1,
            sse_ping_ms=50,
            command_timeout_ms=300,
        ) as gw:
            agent = await gw.agent(rooms={"r1": RawRoom("match")})
            paths = [
                ("GET", "/v1/stats", None),
                ("GET", "/v1/stats", "unknown-key-0123456789abcdef"),
                ("GET", "/v1/stats", KEY),
                ("GET", f"/v1/stats?key={ADMIN}", None),
                ("GET", f"/v1/events?key={ADMIN}x", None),
                ("GET", f"/v1/events?key={KEY}", None),
                ("GET", f"/nope?key={ADMIN}", None),
                ("DELETE", f"/v1/stats?key={ADMIN}", ADMIN),
                ("POST", "/v1/rooms", KEY),
                ("DELETE", "/v1/rooms/r1", KEY),
                ("POST", f"/v1/instances/{agent.instance_id}/drain", "x"),
                ("GET", "/v1/rooms?limit=0", second_admin),
                ("GET", "/v1/rooms/nope", ADMIN),
            ]
            for method, path, key in paths:
                replies.append(await gw.request(method, path, key=key))
            replies.append(await gw.post("/v1/rooms", data=b"{bad", key=second_admin))
            replies.append(await gw.post("/v1/rooms", data=b" " * 70_000, key=ADMIN))
            replies.append(await gw.post("/v1/rooms", json={"type": "match", "roomId": "m1"}))
            replies.append(await gw.delete("/v1/rooms/m1", key=second_admin))
            agent.auto_ack = False
            replies.append(await gw.post("/v1/rooms", json={"type": "match"}))  # 504
            replies.append(await handshake(gw, f"rivalis-fleet.v1, {ADMIN}", "5.5.5.5"))
            replies.append(await handshake(gw, f"rivalis-fleet.v1, {KEY}, extra", "5.5.5.6"))
            async with RawAgent(gw.agent_url, rooms={"x": RawRoom("match")}):
                pass

            events = f"/v1/events?key={ADMIN}" if query_auth else "/v1/events"
            headers = {} if query_auth else gw.auth()
            async with gw.session.get(gw.url(events), headers=headers) as stream:
                assert stream.status == 200
                await SseReader(stream).frame()
                replies.append(await gw.get("/v1/events"))  # over the cap of 1

            def explode(room_id: str) -> None:
                raise RuntimeError("unexpected")

            monkeypatch.setattr(gw.orch.fleet, "get_room", explode)
            replies.append(await gw.get("/v1/rooms/r1"))
            monkeypatch.undo()
            for _ in range(11):
                replies.append(await gw.get("/v1/stats", key=None))
            replies.append(await gw.get("/v1/stats"))

    statuses = {r.status for r in replies}
    assert {400, 401, 404, 405, 413, 429, 500, 504}.issubset(statuses), statuses
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    assert any(line.startswith("fleet.audit") for line in lines)
    assert any(line.startswith("fleet.http DEBUG") for line in lines)
    for line in lines:
        for key in keys:
            assert key not in line, line
        if line.startswith("fleet.http"):
            assert not re.search(r"\?\S*=", line), line  # no query string
    for reply in replies:
        for key in keys:
            assert key.encode() not in reply.body
            assert all(key not in value for value in reply.headers.values())


async def test_the_admin_key_does_not_open_the_agent_endpoint(gw: Gateway) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.session.ws_connect(gw.agent_url, protocols=("rivalis-fleet.v1", ADMIN))
    assert info.value.status == 401


async def test_a_handshake_without_the_sentinel_logs_no_key(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await handshake(gw, KEY)).body == UNAUTHORIZED
    assert all(KEY not in record.getMessage() for record in caplog.records)


async def test_the_access_line_is_written_at_debug_without_key_or_query(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleet.http")
    assert (await gw.get(f"/v1/stats?key={ADMIN}&x=1")).status == 200
    assert (await gw.get("/healthz?x=1", key=None)).status == 200
    assert (await gw.get("/v1/rooms", key=KEY)).status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "fleet.http" and r.levelno == 10]
    assert len(lines) == 3, lines
    assert re.fullmatch(r"GET /v1/stats 200 ip=127\.0\.0\.1 \d+\.\dms", lines[0])
    assert re.fullmatch(r"GET /healthz 200 ip=127\.0\.0\.1 \d+\.\dms", lines[1])
    assert re.fullmatch(r"GET /v1/rooms 401 ip=127\.0\.0\.1 \d+\.\dms", lines[2])
    assert all(ADMIN not in line and KEY not in line and "?" not in line for line in lines)


async def test_without_debug_no_access_line_is_built_but_audit_lines_are(
    gw: Gateway, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    paths: list[str] = []
    real = middleware.raw_path

    def counting(request: web.BaseRequest) -> str:
        path = real(request)
        paths.append(path)
        return path

    monkeypatch.setattr(middleware, "raw_path", counting)
    await gw.agent(rooms={"r1": RawRoom("match")})
    assert (await gw.get("/v1/stats")).status == 200
    assert (await gw.get("/healthz", key=None)).status == 200
    assert paths == []
    assert not [r for r in caplog.records if r.name == "fleet.http"]
    assert (await gw.delete("/v1/rooms/r1")).status == 200
    assert paths == ["/v1/rooms/r1"]
    fp = fingerprint(ADMIN)
    assert audit_lines(caplog) == [
        f"audit route=DELETE /v1/rooms/r1 key={fp} ip=127.0.0.1 outcome=200"
    ]


def test_a_key_ring_identifies_keys_by_fingerprint_comparing_every_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    second = "second-admin-key-fedcba9876543210"
    ring = KeyRing([ADMIN, second])
    ids = {ADMIN: fingerprint(ADMIN), second: fingerprint(second)}
    hashed: list[bytes] = []
    compared: list[tuple[bytes, bytes]] = []
    real_sha256 = hashlib.sha256
    real_compare = hmac.compare_digest

    def sha256(data: bytes) -> hashlib._Hash:
        hashed.append(data)
        return real_sha256(data)

    def compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real_compare(a, b))

    monkeypatch.setattr(hashlib, "sha256", sha256)
    monkeypatch.setattr(hmac, "compare_digest", compare)
    for _ in range(3):
        assert ring.identify(ADMIN) == ids[ADMIN]
        assert ring.identify(second) == ids[second]
        assert ring.match(ADMIN) == ADMIN
        assert ring.identify(KEY) is None and ring.match(KEY) is None
        assert ring.identify(ADMIN + "x") is None and ring.identify(ADMIN[:-1]) is None
    assert ring.identify(None) is None and ring.identify("") is None
    assert len(compared) == 3 * 7 * 2  # every presented key against both digests
    assert all(len(a) == len(b) == 32 for a, b in compared)
    # a matching key is hashed once; a wrong one every time it is presented
    wrong = [KEY, KEY, ADMIN + "x", ADMIN[:-1]]
    assert sorted(hashed) == sorted(k.encode() for k in [ADMIN, second, *3 * wrong])
