"""Small frozen tunables of the agent: capacity limits and the reconnect backoff."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Backoff", "Capacity"]

_INT32_MAX = 2**31 - 1


def _check_limit(option: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an int or None")
    if not 0 <= value <= _INT32_MAX:
        raise ValueError(f"{option} must be between 0 and {_INT32_MAX}, got {value}")


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the instance may hold; ``None`` is unlimited and ``0`` a real limit."""

    max_connections: int | None = None
    max_rooms: int | None = None

    def __post_init__(self) -> None:
        _check_limit("max_connections", self.max_connections)
        _check_limit("max_rooms", self.max_rooms)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect backoff with full jitter.

    The n-th wait after a failure is uniform in ``[0, min(max_ms, initial_ms * 2**(n-1))]``;
    the count restarts at every Hello.
    """

    initial_ms: float = 500
    max_ms: float = 30_000

    def __post_init__(self) -> None:
        for option, value in (("initial_ms", self.initial_ms), ("max_ms", self.max_ms)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{option} must be a positive number")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{option} must be a positive number")
        if self.max_ms < self.initial_ms:
            raise ValueError("max_ms must be >= initial_ms")
