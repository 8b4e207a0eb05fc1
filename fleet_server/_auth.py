"""Authentication for every surface: keys, fingerprints, the throttle, the audit line.

:class:`Authenticator` is the one gate the agent upgrade, REST/SSE and gRPC pass: the
per-IP failed-auth throttle is checked first (``AUTH_THROTTLED``), then the presented
credentials (``UNAUTHORIZED``), and a miss costs one token of the IP's bucket (SPEC
§12). Each surface passes its own logger, so ``auth failed`` / ``auth throttled`` lines
appear under ``fleet.server``, ``fleet.http`` or ``fleet.grpc``; the audit line is
always ``fleet.audit``. Derived API tokens (:mod:`._tokens`) are the admin audience's
second credential kind: a principal says which kind it holds and its scope.

Keys are compared by SHA-256 digest in constant time against every configured key,
with no early exit; only fingerprints (``key#`` + 8 hex) ever reach a log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from fleet_agent._tickets import ticket_key

from ._agent_tokens import AgentGrant, AgentTokenBook, looks_like_agent_token
from ._errors import ErrorCode, FleetError
from ._metrics import NULL_METER, Meter
from ._tokens import ApiTokens, MintedToken, Scope, looks_like_token, token_fingerprint

__all__ = [
    "Audience",
    "AuthThrottle",
    "Authenticator",
    "KeyRing",
    "Principal",
    "Scope",
    "fingerprint",
]

audit_log = logging.getLogger("fleet.audit")

_AUTH_SCHEME: Final = "bearer"
_REMEMBERED_HEADERS: Final = 4  # Authorization values remembered per admin key


def _sha256(text: str) -> bytes:
    """The SHA-256 of ``text`` as UTF-8, lone surrogates included: a header value with
    bytes that are not UTF-8 reaches us with them escaped as surrogates."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def fingerprint(key: str) -> str:
    return "key#" + _sha256(key).hex()[:8]


class KeyRing:
    """A set of accepted keys, matched in constant time."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(keys)
        self._digests = tuple(_sha256(k) for k in self._keys)
        self._ids = tuple(fingerprint(k) for k in self._keys)
        # Digests of presented strings that matched a key: at most one per key, so only
        # configured keys are held, and a wrong key is always hashed afresh.
        self._matched: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def index(self, presented: str | None) -> int:
        """The position of the configured key equal to ``presented``, or -1.

        The SHA-256 of ``presented`` (remembered once it has matched), then a
        constant-time comparison with every configured digest, with no early exit.
        """
        if not presented or not self._digests:
            return -1
        digest = self._matched.get(presented)
        remembered = digest is not None
        if digest is None:
            digest = _sha256(presented)
        found = -1
        for index, candidate in enumerate(self._digests):
            if hmac.compare_digest(digest, candidate):
                found = index
        if found >= 0 and not remembered:
            self._matched[presented] = digest
        return found

    def match(self, presented: str | None) -> str | None:
        """The configured key equal to ``presented``, or None."""
        index = self.index(presented)
        return self._keys[index] if index >= 0 else None

    def identify(self, presented: str | None) -> str | None:
        """The :func:`fingerprint` of the configured key equal to ``presented``, or None."""
        index = self.index(presented)
        return self._ids[index] if index >= 0 else None


class AuthThrottle:
    """Per-IP token bucket for failed authentications.

    ``limit`` tokens refill linearly over ``window_ms``; a failure costs one token; an IP
    with less than one token is refused before its key is examined.
    """

    def __init__(
        self,
        limit: int = 10,
        window_ms: int = 60_000,
        max_buckets: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = float(limit)
        self._window = window_ms / 1000.0
        self._rate = self._limit / self._window
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._last_prune = clock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, ip: str, now: float) -> float:
        entry = self._buckets.get(ip)
        if entry is None:
            return self._limit
        tokens, stamp = entry
        return min(self._limit, tokens + (now - stamp) * self._rate)

    def blocked(self, ip: str) -> bool:
        now = self._clock()
        if now - self._last_prune >= self._window:
            self._prune(now)
        if ip not in self._buckets:  # a full bucket
            return self._limit < 1.0
        return self._level(ip, now) < 1.0

    def failure(self, ip: str) -> None:
        now = self._clock()
        level = max(0.0, self._level(ip, now) - 1.0)
        self._buckets[ip] = (level, now)
        self._buckets.move_to_end(ip)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)

    def _prune(self, now: float) -> None:
        if now - self._last_prune < self._window:
            return
        self._last_prune = now
        for ip in [ip for ip, (_, stamp) in self._buckets.items() if now - stamp >= self._window]:
            if self._level(ip, now) >= self._limit:
                del self._buckets[ip]


class Audience(StrEnum):
    """Who a credential admits: a game server's agent, or an operator of the API."""

    AGENT = "agent"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its audience, the fingerprint of its credential
    (``key#…``, ``tok#…`` or ``agt#…``), what it may do, and whether it holds a token."""

    audience: Audience
    key_id: str
    scope: Scope = Scope.ADMIN
    token: bool = False
    grant: AgentGrant | None = None  # an agent token's: its id and what it binds

    def may(self, write: bool) -> bool:
        """Whether this caller may make a call that writes (``write``) or only reads."""
        return not write or self.scope is Scope.ADMIN


class Authenticator:
    """The keys of both audiences and the one throttle every surface shares."""

    def __init__(
        self,
        *,
        agent_keys: Sequence[str],
        admin_keys: Sequence[str],
        trust_proxy: bool = False,
        failure_limit: int = 10,
        failure_window_ms: int = 60_000,
        clock: Callable[[], float] = time.monotonic,
        tokens: ApiTokens | None = None,
        agent_tokens: AgentTokenBook | None = None,
        meter: Meter = NULL_METER,
    ) -> None:
        # Each audience's keys, and one principal per key, in the same order.
        self._agent = (KeyRing(agent_keys), _principals(Audience.AGENT, agent_keys))
        self._admin = (KeyRing(admin_keys), _principals(Audience.ADMIN, admin_keys))
        self._admin_headers: dict[str, Principal] = {}  # see admin_header
        self._tokens = tokens if tokens is not None else ApiTokens(admin_keys)
        self._agent_tokens = agent_tokens  # None: agent tokens are turned off
        self._meter = meter
        self._ticket_keys = {fingerprint(key): ticket_key(key) for key in agent_keys}
        self._trust_proxy = trust_proxy
        self.throttle = AuthThrottle(failure_limit, failure_window_ms, clock=clock)

    def ticket_key(self, principal: Principal) -> bytes:
        """The seat-ticket key of the agent key or token ``principal`` authenticated with."""
        if principal.grant is not None:
            return principal.grant.ticket_key
        return self._ticket_keys.get(principal.key_id, b"")

    @staticmethod
    def bearer(header: str | None) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != _AUTH_SCHEME:
            return None
        token = token.strip()
        return token or None

    def client_ip(self, remote: str | None, headers: Mapping[str, str]) -> str:
        """The caller's IP: the first ``X-Forwarded-For`` entry behind a trusted proxy
        (the header is not even read otherwise)."""
        if self._trust_proxy:
            first = headers.get("X-Forwarded-For", "").split(",", 1)[0].strip()
            if first:
                return first
        return remote or "unknown"

    def mint_token(self, scope: Scope, ttl_s: int) -> MintedToken:
        """A new API token (``ValueError`` for a ``ttl_s`` out of range)."""
        return self._tokens.mint(scope, ttl_s)

    def admin_header(self, ip: str, header: str | None) -> Principal | None:
        """The principal of the admin key in ``header`` (an ``Authorization`` value) when
        ``ip`` is not throttled; None otherwise, and :meth:`authenticate` decides (and
        logs). The common case of every admin request, without the general path's
        arguments: a header that named a key is remembered as it was sent (at most
        :data:`_REMEMBERED_HEADERS` per key), so the next request with it is one lookup.
        """
        principal = self._admin_headers.get(header) if header else None
        if principal is not None:
            return None if self.throttle.blocked(ip) else principal
        credential = self.bearer(header)
        if not credential or self.throttle.blocked(ip):
            return None
        ring, principals = self._admin
        index = ring.index(credential)
        if index < 0:
            return None
        principal = principals[index]
        if header and len(self._admin_headers) < _REMEMBERED_HEADERS * len(ring):
            self._admin_headers[header] = principal
        return principal

    def authenticate(
        self,
        audience: Audience,
        ip: str,
        route: str | Callable[[], str],
        *presented: str | None,
        token: str | None = None,
        log: logging.Logger,
    ) -> Principal:
        """The principal one of ``presented`` (a key, or an API token for the admin
        audience) or ``token`` (an API token only) names; raises ``AUTH_THROTTLED`` while
        ``ip`` is throttled (nothing examined) or ``UNAUTHORIZED`` (one failure).

        ``route`` names the call in the log line; a callable is only called to log."""
        throttle = self.throttle
        if throttle.blocked(ip):
            log.warning("auth throttled ip=%s route=%s", ip, _text(route))
            raise FleetError(ErrorCode.AUTH_THROTTLED, "too many failed authentications")
        admin = audience is Audience.ADMIN
        ring, principals = self._admin if admin else self._agent
        for credential in presented:
            index = ring.index(credential)
            if index >= 0:
                return principals[index]
            if not credential:
                continue
            found = None
            if admin and looks_like_token(credential):
                found = self._token_principal(credential)
            elif not admin and looks_like_agent_token(credential):
                found = self._agent_principal(credential)
            if found is not None:
                return found
        if admin and token:
            found = self._token_principal(token)
            if found is not None:
                return found
        throttle.failure(ip)
        self._meter.auth_failure(audience.value)
        log.warning("auth failed ip=%s route=%s", ip, _text(route))
        raise FleetError(ErrorCode.UNAUTHORIZED, f"an {audience.value} key is required")

    def _token_principal(self, token: str) -> Principal | None:
        scope = self._tokens.check(token)
        if scope is None:
            return None
        return Principal(Audience.ADMIN, token_fingerprint(token), scope, token=True)

    def revoked(self, principal: Principal) -> bool:
        """Whether the agent token ``principal`` joined with has been revoked since."""
        grant, book = principal.grant, self._agent_tokens
        return grant is not None and book is not None and book.is_revoked(grant.id)

    def _agent_principal(self, token: str) -> Principal | None:
        book = self._agent_tokens
        grant = book.check(token) if book is not None else None
        if grant is None:
            return None
        return Principal(Audience.AGENT, grant.fingerprint, token=True, grant=grant)

    @staticmethod
    def audit(route: str, principal: Principal | None, ip: str, outcome: str) -> None:
        """The audit line of a control call (refused ones too); fingerprints only."""
        audit_log.info(
            "audit route=%s key=%s ip=%s outcome=%s",
            route,
            principal.key_id if principal is not None else "unknown",
            ip,
            outcome,
        )


def _text(route: str | Callable[[], str]) -> str:
    return route if isinstance(route, str) else route()


def _principals(audience: Audience, keys: Sequence[str]) -> tuple[Principal, ...]:
    return tuple(Principal(audience, fingerprint(key)) for key in keys)
