"""Per-instance agent tokens (CONTRACT §13, docs/agent-tokens.md): mint, check, revoke.

A token is ``"agt1." + b64url(payload) + "." + b64url(tag)``, signed like an API token
(:mod:`._tokens`) but with its own derivation label. :class:`AgentTokenBook` mints and
checks them and keeps a record of each (never the token): what it binds, when it
expires and whether it is revoked. The records are part of the membership record, so
revocations survive a restart or a takeover until the token expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from fleet_agent._tickets import ticket_key

from ._tokens import decode_token, encode_token, random_id

__all__ = [
    "AGENT_TOKEN_PREFIX",
    "DEFAULT_AGENT_TTL_S",
    "MAX_AGENT_TOKEN_LENGTH",
    "MAX_AGENT_TTL_S",
    "MIN_AGENT_TTL_S",
    "AgentGrant",
    "AgentTokenBook",
    "AgentTokenRecord",
    "MintedAgentToken",
    "agent_token_fingerprint",
    "agent_token_key",
    "binding_violation",
]

AGENT_TOKEN_PREFIX: Final = "agt1"
MIN_AGENT_TTL_S: Final = 60
MAX_AGENT_TTL_S: Final = 31_536_000
DEFAULT_AGENT_TTL_S: Final = 2_592_000
MAX_AGENT_TOKEN_LENGTH: Final = 7_000
_KEY_LABEL: Final = b"rivalis-fleet agent token v1"
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


def agent_token_key(admin_key: str) -> bytes:
    """The HMAC key agent tokens are signed with, derived from an admin key."""
    return hmac.new(admin_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def agent_token_fingerprint(token: str) -> str:
    """How logs name an agent token: ``agt#`` + 8 hex of its SHA-256."""
    return "agt#" + hashlib.sha256(token.encode()).hexdigest()[:8]


def looks_like_agent_token(presented: str) -> bool:
    return presented.startswith(AGENT_TOKEN_PREFIX + ".")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AgentTokenRecord:
    """What the orchestrator keeps of a token: never the token itself."""

    id: str
    name: str | None
    labels: Mapping[str, str]
    created_at: int  # ms since the epoch
    expires_at: int
    revoked_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "revokedAt": self.revoked_at,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> AgentTokenRecord:
        """A stored record; TypeError / KeyError when it is malformed."""
        return cls(
            id=_text(entry["id"]),
            name=_optional_text(entry.get("name")),
            labels=_labels(entry.get("labels")),
            created_at=_int(entry["createdAt"]),
            expires_at=_int(entry["expiresAt"]),
            revoked_at=None if entry.get("revokedAt") is None else _int(entry["revokedAt"]),
        )


@dataclass(frozen=True, slots=True)
class AgentGrant:
    """What a valid agent token admits: its id, what it binds, and the seat-ticket key
    derived from the token (the agent verifies tickets with what it presented)."""

    id: str
    name: str | None
    labels: Mapping[str, str]
    fingerprint: str
    ticket_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class MintedAgentToken:
    id: str
    token: str = field(repr=False)
    expires_at: int  # ms since the epoch

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "token": self.token, "expiresAt": self.expires_at}


def binding_violation(grant: AgentGrant, name: str, labels: Mapping[str, str]) -> str | None:
    """Why a snapshot's ``name`` and ``labels`` break ``grant``'s binding, or None."""
    if grant.name is not None and name != grant.name:
        return "name differs from the name its agent token binds"
    for key, value in grant.labels.items():
        if labels.get(key) != value:
            return f"label {key!r} differs from the value its agent token binds"
    return None


class AgentTokenBook:
    """Mints and checks agent tokens and keeps their records (CONTRACT §13)."""

    def __init__(
        self,
        admin_keys: Sequence[str],
        cluster: str,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._keys = tuple(agent_token_key(key) for key in admin_keys)
        self._cluster = cluster
        self._clock_ms = clock_ms
        self._records: dict[str, AgentTokenRecord] = {}
        self.on_change: Callable[[], None] = lambda: None

    def mint(
        self,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        ttl_s: int = DEFAULT_AGENT_TTL_S,
    ) -> MintedAgentToken:
        """A new token (``ValueError`` for a ``ttl_s`` out of range or a token that
        would be too long; the caller has checked name and labels)."""
        if not self._keys:
            raise ValueError("no admin key to sign agent tokens with")
        if not MIN_AGENT_TTL_S <= ttl_s <= MAX_AGENT_TTL_S:
            raise ValueError(f"ttlS must be from {MIN_AGENT_TTL_S} to {MAX_AGENT_TTL_S}")
        now = self._clock_ms()
        token_id = "agt_" + random_id(12)
        payload: dict[str, Any] = {
            "v": 1,
            "id": token_id,
            "cluster": self._cluster,
            "iat": now,
            "exp": now + ttl_s * 1000,
        }
        if name is not None:
            payload["name"] = name
        if labels:
            payload["labels"] = dict(labels)
        token = encode_token(self._keys[0], payload, AGENT_TOKEN_PREFIX)
        if len(token) > MAX_AGENT_TOKEN_LENGTH:
            raise ValueError(
                f"name and labels make the token longer than {MAX_AGENT_TOKEN_LENGTH} chars"
            )
        self._records[token_id] = _record(payload)
        self.on_change()
        return MintedAgentToken(token_id, token, payload["exp"])

    def check(self, presented: str) -> AgentGrant | None:
        """The grant of a valid, unexpired, unrevoked token of this cluster; else None.
        A valid token minted before a restart without a store is recorded now."""
        doc = decode_token(self._keys, presented, AGENT_TOKEN_PREFIX, MAX_AGENT_TOKEN_LENGTH)
        if doc is None or doc.get("cluster") != self._cluster:
            return None
        try:
            record = _record(doc)
        except (KeyError, TypeError):
            return None
        if record.expires_at <= self._clock_ms():
            return None
        known = self._records.get(record.id)
        if known is None:
            self._records[record.id] = record
            self.on_change()
        elif known.revoked_at is not None:
            return None
        return AgentGrant(
            record.id,
            record.name,
            record.labels,
            agent_token_fingerprint(presented),
            ticket_key(presented),
        )

    def revoke(self, token_id: str) -> bool:
        """Mark ``token_id`` revoked (again: no change); False when it is unknown or
        expired."""
        record = self._records.get(token_id)
        if record is None or record.expires_at <= self._clock_ms():
            return False
        if record.revoked_at is None:
            self._records[token_id] = replace(record, revoked_at=self._clock_ms())
            self.on_change()
        return True

    def is_revoked(self, token_id: str) -> bool:
        record = self._records.get(token_id)
        return record is not None and record.revoked_at is not None

    def records(self) -> tuple[AgentTokenRecord, ...]:
        """Unexpired records, oldest first (expired ones are dropped on the way)."""
        now = self._clock_ms()
        expired = [key for key, r in self._records.items() if r.expires_at <= now]
        for key in expired:
            del self._records[key]
        return tuple(sorted(self._records.values(), key=lambda r: (r.created_at, r.id)))

    def restore(self, records: Iterable[AgentTokenRecord]) -> None:
        """Take the stored records over (a start or a takeover): a revocation stored
        wins over an unrevoked record of the same id held here."""
        for record in records:
            held = self._records.get(record.id)
            if held is None or held.revoked_at is None:
                self._records[record.id] = record


def _record(payload: Mapping[str, Any]) -> AgentTokenRecord:
    return AgentTokenRecord(
        id=_text(payload["id"]),
        name=_optional_text(payload.get("name")),
        labels=_labels(payload.get("labels")),
        created_at=_int(payload["iat"]),
        expires_at=_int(payload["exp"]),
    )


def _labels(value: Any) -> Mapping[str, str]:
    if value is None or value == {}:
        return _EMPTY
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("labels must be an object of strings")
    return MappingProxyType(dict(value))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value
