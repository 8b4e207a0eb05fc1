"""Key matching, fingerprints and the failed-auth throttle (SPEC §12.2–§12.4; catalogue
76–78 and 86 at the unit level, plus the agent handshake throttle)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from fleet_server import Orchestrator
from fleet_server._auth import Authenticator, AuthThrottle, KeyRing, fingerprint
from fleet_server._options import normalize_keys
from tests.support.clients import handshake_status
from tests.support.keys import ADMIN, KEY
from tests.support.orchestrators import running_orchestrator

OLD = "old-agent-key-0123456789abcdef0123"
NEW = "new-agent-key-0123456789abcdef0123"


class Clock:
    """An injectable monotonic clock, in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- fingerprints and key rings ---------------------------------------------------------


def test_fingerprint_is_key_hash_prefix_of_sha256_and_never_the_key() -> None:
    key = "some-secret-key-value"
    fp = fingerprint(key)
    assert fp == "key#" + hashlib.sha256(key.encode()).hexdigest()[:8]
    assert re.fullmatch(r"key#[0-9a-f]{8}", fp)
    assert key not in fp


def test_key_ring_returns_the_matched_key_and_both_rotation_keys_work() -> None:
    ring = KeyRing([OLD, NEW])
    assert ring.match(OLD) == OLD
    assert ring.match(NEW) == NEW
    assert ring.match("other-key-0123456789abcdef0123456") is None
    assert ring.match(OLD + "x") is None and ring.match(OLD[:-1]) is None


# "\udcff": a header byte that is not UTF-8, as aiohttp hands it over (surrogateescape)
@pytest.mark.parametrize(
    "presented", [None, "", "x", "k" * 10_000, "ключ-🔑", "\udcff" + OLD, "a\ud800b"]
)
def test_key_ring_never_raises_and_null_empty_or_odd_keys_do_not_match(
    presented: str | None,
) -> None:
    assert KeyRing([OLD]).match(presented) is None
    assert KeyRing([]).match(presented) is None


def test_a_key_with_bytes_that_are_not_utf8_matches_only_itself() -> None:
    odd = "\udcff" + OLD  # a key passed as raw bytes on the command line
    ring = KeyRing([odd])
    assert ring.match(odd) == odd and ring.match(OLD) is None
    assert re.fullmatch(r"key#[0-9a-f]{8}", fingerprint(odd))


def test_empty_key_ring_matches_nothing() -> None:
    assert KeyRing([]).match(OLD) is None
    assert len(KeyRing([])) == 0


def test_key_ring_compares_against_every_key_without_early_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)
    ring = KeyRing([OLD, NEW, "third-key-0123456789abcdef012345"])
    assert ring.match(OLD) == OLD  # the first key matches...
    assert len(calls) == 3  # ...and every configured key was still compared
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests, not raw keys


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer    abc", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearerabc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_scheme_is_case_insensitive_with_at_least_one_space(
    header: str | None, token: str | None
) -> None:
    assert Authenticator.bearer(header) == token


def test_keys_are_normalised_one_string_or_a_list_without_empties_or_duplicates() -> None:
    assert normalize_keys(OLD, "agent_key") == (OLD,)
    assert normalize_keys([NEW, "", OLD, NEW], "agent_key") == (NEW, OLD)
    assert normalize_keys(None, "admin_key") == ()
    with pytest.raises(ValueError, match="agent_key"):
        normalize_keys([OLD, 42], "agent_key")  # type: ignore[list-item]


@pytest.mark.parametrize("bad", ["has,comma-0123456789abcdef", "has space-0123456789abcdef"])
def test_agent_key_with_comma_or_whitespace_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        Orchestrator(agent_key=[KEY, bad], admin_key=ADMIN)
    assert bad not in str(info.value)
    assert "agent_key" in str(info.value)


def test_orchestrator_needs_an_agent_key() -> None:
    with pytest.raises(ValueError, match="agent"):
        Orchestrator(agent_key=["", ""], admin_key=ADMIN, agent_tokens=False)
    with pytest.raises(ValueError, match="agent"):
        Orchestrator(agent_key=[], api=False)  # no admin key to sign agent tokens with


def test_no_agent_key_with_agent_tokens_and_an_admin_key_is_token_only_mode() -> None:
    orch = Orchestrator(agent_key=[], admin_key=ADMIN)
    assert orch.options.agent_keys == () and orch.options.agent_tokens


# --- throttle ----------------------------------------------------------------------------


def test_ten_failures_block_an_ip_and_success_costs_nothing() -> None:
    clock = Clock()
    throttle = AuthThrottle(10, 60_000, clock=clock)
    for _ in range(10):
        assert not throttle.blocked("1.1.1.1")  # each of these attempts is examined (401)
        throttle.failure("1.1.1.1")
    assert throttle.blocked("1.1.1.1")  # the 11th attempt is refused (429)
    assert not throttle.blocked("2.2.2.2")  # other IPs have their own bucket
    for _ in range(100):  # checks alone (successful requests) cost nothing
        assert not throttle.blocked("3.3.3.3")


def test_tokens_refill_linearly_and_the_level_never_goes_below_zero() -> None:
    clock = Clock()
    throttle = AuthThrottle(10, 60_000, clock=clock)
    for _ in range(25):  # 15 failures past empty: floor 0, not -15
        throttle.failure("1.1.1.1")
    assert throttle.blocked("1.1.1.1")
    clock.advance(3.0)  # half a token
    assert throttle.blocked("1.1.1.1")
    clock.advance(3.0)  # one token (10 per 60 s)
    assert not throttle.blocked("1.1.1.1")
    throttle.failure("1.1.1.1")
    assert throttle.blocked("1.1.1.1")
    clock.advance(60.0)
    for _ in range(10):  # a full window refills the whole bucket, never more
        assert not throttle.blocked("1.1.1.1")
        throttle.failure("1.1.1.1")
    assert throttle.blocked("1.1.1.1")


def test_idle_full_buckets_are_pruned_after_a_window() -> None:
    clock = Clock()
    throttle = AuthThrottle(10, 60_000, clock=clock)
    for i in range(500):
        throttle.failure(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 500
    clock.advance(30.0)
    throttle.blocked("9.9.9.9")
    assert len(throttle) == 500  # not within the first window
    clock.advance(90.0)  # two windows after the failures
    assert not throttle.blocked("9.9.9.9")
    throttle.failure("9.9.9.9")
    assert len(throttle) == 1


def test_bucket_cap_evicts_the_least_recently_touched() -> None:
    clock = Clock()
    throttle = AuthThrottle(10, 60_000, max_buckets=3, clock=clock)
    for i in range(50):
        throttle.failure(f"10.0.0.{i}")
        assert len(throttle) <= 3
    throttle = AuthThrottle(2, 60_000, max_buckets=3, clock=clock)
    for ip in ("a", "b", "c"):
        throttle.failure(ip)
        throttle.failure(ip)
    assert all(throttle.blocked(ip) for ip in ("a", "b", "c"))
    throttle.failure("a")  # touch ``a``: ``b`` is now the least recently touched
    throttle.failure("d")
    assert len(throttle) == 3
    assert not throttle.blocked("b")  # evicted: a fresh, full bucket
    assert throttle.blocked("a") and throttle.blocked("c")


# --- the agent handshake uses the same throttle ------------------------------------------


async def test_failed_agent_handshakes_are_throttled_and_then_even_a_valid_key_is_refused() -> None:
    async with running_orchestrator(heartbeat_ms=1000, auth_failure_limit=3) as orch:
        assert await handshake_status(orch.port, KEY) == 101  # success costs nothing
        for _ in range(2):
            assert await handshake_status(orch.port, "wrong-key-0123456789abcdef") == 401
        assert await handshake_status(orch.port, ADMIN) == 401  # admin keys never pass
        assert await handshake_status(orch.port, "wrong-key-0123456789abcdef") == 429
        assert await handshake_status(orch.port, KEY) == 429
        assert orch.fleet.instances == []
