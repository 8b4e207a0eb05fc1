"""One authenticator for every surface: one throttle, one audit line, fingerprints only."""

from __future__ import annotations

import logging

import pytest

from fleet_server._auth import Audience, Authenticator, fingerprint
from fleet_server._errors import ErrorCode, FleetError

AGENT = "agent-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
log = logging.getLogger("fleet.test")


def _code(auth: Authenticator, audience: Audience, presented: str | None) -> ErrorCode | None:
    try:
        auth.authenticate(audience, "1.2.3.4", "GET /x", presented, log=log)
    except FleetError as exc:
        return exc.code
    return None


def test_each_audience_accepts_only_its_own_keys() -> None:
    auth = Authenticator(agent_keys=[AGENT], admin_keys=[ADMIN])
    principal = auth.authenticate(Audience.ADMIN, "1.2.3.4", "GET /x", None, ADMIN, log=log)
    assert principal.key_id == fingerprint(ADMIN) and principal.audience is Audience.ADMIN
    assert _code(auth, Audience.AGENT, ADMIN) is ErrorCode.UNAUTHORIZED
    assert _code(auth, Audience.ADMIN, AGENT) is ErrorCode.UNAUTHORIZED


def test_failures_on_any_surface_share_one_throttle() -> None:
    auth = Authenticator(agent_keys=[AGENT], admin_keys=[ADMIN], failure_limit=2)
    assert _code(auth, Audience.AGENT, "wrong") is ErrorCode.UNAUTHORIZED
    assert _code(auth, Audience.ADMIN, None) is ErrorCode.UNAUTHORIZED
    assert _code(auth, Audience.ADMIN, ADMIN) is ErrorCode.AUTH_THROTTLED


def test_the_client_ip_comes_from_forwarded_for_only_behind_a_trusted_proxy() -> None:
    trusting = Authenticator(agent_keys=[AGENT], admin_keys=[], trust_proxy=True)
    plain = Authenticator(agent_keys=[AGENT], admin_keys=[])
    forwarded = {"X-Forwarded-For": " 7.7.7.7 , 8.8.8.8"}
    assert trusting.client_ip("10.0.0.1", forwarded) == "7.7.7.7"
    assert trusting.client_ip("10.0.0.1", {}) == "10.0.0.1"
    assert plain.client_ip("10.0.0.1", forwarded) == "10.0.0.1"
    assert plain.client_ip(None, {}) == "unknown"


def test_failure_and_audit_lines_carry_fingerprints_never_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    auth = Authenticator(agent_keys=[AGENT], admin_keys=[ADMIN])
    assert _code(auth, Audience.ADMIN, AGENT) is ErrorCode.UNAUTHORIZED
    principal = auth.authenticate(Audience.ADMIN, "1.2.3.4", "DELETE /v1/rooms/r", ADMIN, log=log)
    auth.audit("DELETE /v1/rooms/r", principal, "1.2.3.4", "200")
    messages = [r.getMessage() for r in caplog.records]
    assert "auth failed ip=1.2.3.4 route=GET /x" in messages
    assert f"audit route=DELETE /v1/rooms/r key={fingerprint(ADMIN)} ip=1.2.3.4 outcome=200" in (
        messages
    )
    assert not any(AGENT in m or ADMIN in m for m in messages)


def test_an_admin_header_is_remembered_yet_still_throttled_and_the_memory_is_bounded() -> None:
    auth = Authenticator(agent_keys=[AGENT], admin_keys=[ADMIN], failure_limit=1)
    header = f"Bearer {ADMIN}"
    first = auth.admin_header("1.2.3.4", header)
    assert first is not None and first.key_id == fingerprint(ADMIN)
    assert auth.admin_header("1.2.3.4", header) is first  # remembered
    assert auth.admin_header("1.2.3.4", f"Bearer {AGENT}") is None  # not an admin key
    assert auth.admin_header("1.2.3.4", "Basic x") is None
    assert auth.admin_header("1.2.3.4", None) is None
    auth.throttle.failure("5.6.7.8")
    assert auth.admin_header("5.6.7.8", header) is None  # remembered, but the IP is throttled
    variants = [f"bearer{' ' * n}{ADMIN}" for n in range(1, 40)]
    assert all(auth.admin_header("1.2.3.4", v) is first for v in variants)
    assert len(auth._admin_headers) <= 4  # a few spellings per key, never more
