"""Keys, fingerprints and the failed-auth throttle (SPEC §12).

Keys are compared by SHA-256 digest in constant time against every configured key,
with no early exit; only fingerprints (``key#`` + 8 hex) ever reach a log.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Final

__all__ = ["AuthThrottle", "KeyRing", "fingerprint", "normalize_keys"]

_AUTH_SCHEME: Final = "bearer"


def fingerprint(key: str) -> str:
    return "key#" + hashlib.sha256(key.encode()).hexdigest()[:8]


def normalize_keys(keys: str | Iterable[str] | None, option: str) -> tuple[str, ...]:
    """One key or a list: empties dropped, duplicates removed in order."""
    if keys is None:
        return ()
    items = [keys] if isinstance(keys, str) else list(keys)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{option} must be a string or a list of strings")
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return tuple(out)


class KeyRing:
    """A set of accepted keys, matched in constant time."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(keys)
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in self._keys)
        self._ids = tuple(fingerprint(k) for k in self._keys)
        # Digests of presented strings that matched a key: at most one per key, so only
        # configured keys are held, and a wrong key is always hashed afresh.
        self._matched: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def _index(self, presented: str | None) -> int:
        """The position of the configured key equal to ``presented``, or -1.

        The SHA-256 of ``presented`` (remembered once it has matched), then a
        constant-time comparison with every configured digest, with no early exit.
        """
        if not presented or not self._digests:
            return -1
        digest = self._matched.get(presented)
        remembered = digest is not None
        if digest is None:
            digest = hashlib.sha256(presented.encode()).digest()
        found = -1
        for index, candidate in enumerate(self._digests):
            if hmac.compare_digest(digest, candidate):
                found = index
        if found >= 0 and not remembered:
            self._matched[presented] = digest
        return found

    def match(self, presented: str | None) -> str | None:
        """The configured key equal to ``presented``, or None."""
        index = self._index(presented)
        return self._keys[index] if index >= 0 else None

    def identify(self, presented: str | None) -> str | None:
        """The :func:`fingerprint` of the configured key equal to ``presented``, or None."""
        index = self._index(presented)
        return self._ids[index] if index >= 0 else None

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
