"""Derived API tokens: the wire format, expiry, forgery and key rotation (CONTRACT §12,
docs/tokens-and-metrics.md §1)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from fleet_server._auth import Audience, Authenticator, Scope
from fleet_server._errors import ErrorCode, FleetError
from fleet_server._tokens import ApiTokens, encode_token, token_fingerprint, token_key

ADMIN = "admin-key-0123456789abcdef"
OTHER = "admin-key-fedcba9876543210"
AGENT = "agent-key-0123456789abcdef"
NOW_MS = 1_800_000_000_000
log = logging.getLogger("fleet.http")


class Clock:
    def __init__(self) -> None:
        self.ms = NOW_MS

    def __call__(self) -> int:
        return self.ms


def payload_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    value: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


def test_the_documented_vector_is_reproduced() -> None:
    payload = {"v": 1, "scope": "read", "exp": 1_900_000_000_000, "jti": "A" * 22}
    token = encode_token(token_key(ADMIN), payload)
    head, body, tag = token.split(".")
    assert head == "at1"
    assert body == (
        "eyJleHAiOjE5MDAwMDAwMDAwMDAsImp0aSI6IkFBQUFBQUFBQUFBQUFBQUFBQUFBQUEiLCJzY29wZSI6InJlYWQi"
        "LCJ2IjoxfQ"
    )
    assert tag == "VcWAgurqI_BE3Q_gsUZ-yPc8dUfDB92i78XlfBlX0-A"
    assert ApiTokens([ADMIN], Clock()).check(token) is Scope.READ


def test_a_minted_token_carries_its_scope_expiry_and_a_fresh_id() -> None:
    clock = Clock()
    tokens = ApiTokens([ADMIN], clock)
    first = tokens.mint(Scope.ADMIN, 600)
    second = tokens.mint(Scope.ADMIN, 600)
    assert first.expires_at == NOW_MS + 600_000
    expected = {"token": first.token, "scope": "admin", "expiresAt": NOW_MS + 600_000}
    assert first.to_dict() == expected
    assert payload_of(first.token)["exp"] == first.expires_at
    assert first.token != second.token
    assert tokens.check(first.token) is Scope.ADMIN


def test_a_token_dies_at_its_expiry() -> None:
    clock = Clock()
    tokens = ApiTokens([ADMIN], clock)
    token = tokens.mint(Scope.READ, 60).token
    clock.ms += 59_999
    assert tokens.check(token) is Scope.READ
    clock.ms += 1
    assert tokens.check(token) is None


@pytest.mark.parametrize("ttl", [0, 59, 86_401])
def test_a_lifetime_outside_60_to_86400_seconds_is_refused(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttlS"):
        ApiTokens([ADMIN]).mint(Scope.READ, ttl)


def test_tokens_are_signed_with_the_first_key_and_live_while_it_is_listed() -> None:
    clock = Clock()
    old = ApiTokens([ADMIN], clock).mint(Scope.ADMIN, 3600).token
    rotated = ApiTokens([OTHER, ADMIN], clock)  # a new key first, the old one still listed
    assert rotated.check(old) is Scope.ADMIN
    new = rotated.mint(Scope.ADMIN, 3600).token
    assert ApiTokens([OTHER], clock).check(new) is Scope.ADMIN
    assert ApiTokens([OTHER], clock).check(old) is None  # the old key left the rotation


def test_forged_tampered_and_malformed_tokens_are_refused() -> None:
    clock = Clock()
    tokens = ApiTokens([ADMIN], clock)
    token = tokens.mint(Scope.READ, 3600).token
    head, body, tag = token.split(".")
    admin_body = base64.urlsafe_b64encode(
        json.dumps({**payload_of(token), "scope": "admin"}, separators=(",", ":")).encode()
    )
    forged = [
        encode_token(token_key(OTHER), payload_of(token)),  # signed with an unlisted key
        f"{head}.{admin_body.rstrip(b'=').decode()}.{tag}",  # scope raised, old tag
        f"{head}.{body}.{tag[:-2]}AA",
        f"{head}.{body}",
        f"v1.{body}.{tag}",
        f"{head}.{body}.{tag}=",
        f"{head}.!!.{tag}",
        "at1." + "A" * 600 + "." + tag,
        encode_token(token_key(ADMIN), {"v": 2, "scope": "read", "exp": NOW_MS + 10**6}),
        encode_token(token_key(ADMIN), {"v": 1, "scope": "root", "exp": NOW_MS + 10**6}),
        encode_token(token_key(ADMIN), {"v": 1, "scope": "read", "exp": True}),
        encode_token(token_key(ADMIN), {"v": 1, "scope": "read"}),
        "",
    ]
    for candidate in forged:
        assert tokens.check(candidate) is None, candidate
    assert ApiTokens([], clock).check(token) is None


def test_the_authenticator_admits_tokens_as_admin_principals_with_their_scope() -> None:
    clock = Clock()
    auth = Authenticator(agent_keys=[AGENT], admin_keys=[ADMIN], tokens=ApiTokens([ADMIN], clock))
    key = auth.authenticate(Audience.ADMIN, "10.0.0.1", "GET /", ADMIN, log=log)
    assert (key.scope, key.token) == (Scope.ADMIN, False)
    minted = auth.mint_token(Scope.READ, 60)
    read = auth.authenticate(Audience.ADMIN, "10.0.0.1", "GET /", minted.token, log=log)
    assert (read.audience, read.scope, read.token) == (Audience.ADMIN, Scope.READ, True)
    assert read.key_id == token_fingerprint(minted.token) and read.key_id.startswith("tok#")
    assert read.may(write=False) and not read.may(write=True)
    assert key.may(write=True)
    # ``token=`` takes tokens only: a key there is no credential
    query = auth.authenticate(
        Audience.ADMIN, "10.0.0.1", "GET /", None, token=minted.token, log=log
    )
    assert query.scope is Scope.READ
    with pytest.raises(FleetError) as refused:
        auth.authenticate(Audience.ADMIN, "10.0.0.1", "GET /", None, token=ADMIN, log=log)
    assert refused.value.code is ErrorCode.UNAUTHORIZED
    # never an agent credential
    with pytest.raises(FleetError):
        auth.authenticate(Audience.AGENT, "10.0.0.1", "GET /", minted.token, log=log)


def test_a_bad_token_costs_one_throttle_token_like_a_wrong_key() -> None:
    auth = Authenticator(agent_keys=[AGENT], admin_keys=[ADMIN], failure_limit=2)
    forged = encode_token(token_key(OTHER), {"v": 1, "scope": "admin", "exp": 2**52})
    for _ in range(2):
        with pytest.raises(FleetError) as failed:
            auth.authenticate(Audience.ADMIN, "10.0.0.9", "GET /", forged, log=log)
        assert failed.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(FleetError) as throttled:
        auth.authenticate(Audience.ADMIN, "10.0.0.9", "GET /", ADMIN, log=log)
    assert throttled.value.code is ErrorCode.AUTH_THROTTLED
