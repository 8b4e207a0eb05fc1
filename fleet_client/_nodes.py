"""The orchestrator nodes a client knows, and the one it talks to (docs/fleet-client.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Nodes"]


class Nodes:
    """The URLs in order and the current one: a ``NOT_LEADER`` hint moves to the
    hinted node (learnt if new); no hint, or no answer, moves to the next URL."""

    def __init__(self, urls: Sequence[str]) -> None:
        cleaned = [url.rstrip("/") for url in urls if url.strip()]
        if not cleaned:
            raise ValueError("urls: at least one orchestrator URL is required")
        self._urls = list(dict.fromkeys(cleaned))
        self._index = 0

    @property
    def current(self) -> str:
        return self._urls[self._index]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self._urls)

    def follow(self, hint: str | None) -> None:
        """Go to the hinted leader, or to the next URL without a hint."""
        if not hint:
            self.advance()
            return
        hint = hint.rstrip("/")
        if hint not in self._urls:
            self._urls.append(hint)
        self._index = self._urls.index(hint)

    def advance(self) -> None:
        self._index = (self._index + 1) % len(self._urls)
