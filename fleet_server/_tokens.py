"""Derived API tokens (CONTRACT §12, docs/tokens-and-metrics.md §1): mint and check.

A token is ``"at1." + b64url(payload) + "." + b64url(HMAC-SHA256(token_key, "at1." +
b64url(payload)))`` where the payload is the canonical JSON of ``{"v": 1, "scope",
"exp", "jti"}`` (``exp`` in ms since the epoch) and ``token_key = HMAC-SHA256(admin key,
"rivalis-fleet api token v1")``. Tokens are minted with the first admin key's token key
and checked against every listed key's, so a token lives while its signing key is
listed. Nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "PREFIX",
    "ApiTokens",
    "MintedToken",
    "Scope",
    "token_fingerprint",
    "token_key",
]

PREFIX: Final = "at1"
MIN_TTL_S: Final = 60
MAX_TTL_S: Final = 86_400
DEFAULT_TTL_S: Final = 3600
MAX_TOKEN_LENGTH: Final = 512
_KEY_LABEL: Final = b"rivalis-fleet api token v1"


class Scope(StrEnum):
    """What a credential may do: everything (``admin``), or read (``GET`` only)."""

    ADMIN = "admin"
    READ = "read"


_SCOPES: Final = frozenset(scope.value for scope in Scope)


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    scope: Scope
    expires_at: int  # ms since the epoch

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "scope": self.scope.value, "expiresAt": self.expires_at}


def token_key(admin_key: str) -> bytes:
    """The HMAC key tokens are signed with, derived from an admin key."""
    return hmac.new(admin_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def token_fingerprint(token: str) -> str:
    """How logs name a token: ``tok#`` + 8 hex of its SHA-256."""
    return "tok#" + hashlib.sha256(token.encode()).hexdigest()[:8]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or "=" in text:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def encode_token(key: bytes, payload: dict[str, Any], prefix: str = PREFIX) -> str:
    """The token for ``payload`` signed with ``key`` (a :func:`token_key`)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signed = f"{prefix}.{_b64(text.encode())}"
    return f"{signed}.{_b64(_tag(key, signed))}"


def decode_token(
    keys: Sequence[bytes], presented: str, prefix: str, max_length: int
) -> dict[str, Any] | None:
    """The payload of ``presented`` when it is ``prefix.payload.tag`` with a tag made by
    one of ``keys`` (all compared, no early exit) and a JSON object with ``"v": 1``."""
    if len(presented) > max_length or not keys:
        return None
    parts = presented.split(".")
    if len(parts) != 3 or parts[0] != prefix:
        return None
    try:
        payload = _unb64(parts[1])
        tag = _unb64(parts[2])
    except (ValueError, binascii.Error):
        return None
    signed = f"{parts[0]}.{parts[1]}"
    matched = False
    for key in keys:  # every key, no early exit
        matched |= hmac.compare_digest(tag, _tag(key, signed))
    if not matched:
        return None
    try:
        doc: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("v") == 1 else None


def random_id(nbytes: int = 16) -> str:
    return _b64(secrets.token_bytes(nbytes))


def looks_like_token(presented: str) -> bool:
    return presented.startswith(PREFIX + ".")


class ApiTokens:
    """Mints tokens with the first admin key and checks them against every listed one."""

    def __init__(self, admin_keys: Sequence[str], clock_ms: Callable[[], int] = _now_ms) -> None:
        self._keys = tuple(token_key(key) for key in admin_keys)
        self._clock_ms = clock_ms

    def mint(self, scope: Scope, ttl_s: int = DEFAULT_TTL_S) -> MintedToken:
        if not self._keys:
            raise ValueError("no admin key to sign tokens with")
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttlS must be from {MIN_TTL_S} to {MAX_TTL_S}")
        expires_at = self._clock_ms() + ttl_s * 1000
        jti = random_id()
        payload = {"v": 1, "scope": scope.value, "exp": expires_at, "jti": jti}
        return MintedToken(encode_token(self._keys[0], payload), scope, expires_at)

    def check(self, presented: str) -> Scope | None:
        """The scope of a valid, unexpired token signed by a listed key; None otherwise."""
        doc = decode_token(self._keys, presented, PREFIX, MAX_TOKEN_LENGTH)
        if doc is None:
            return None
        exp = doc.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int) or exp <= self._clock_ms():
            return None
        scope = doc.get("scope")
        return Scope(scope) if scope in _SCOPES else None
