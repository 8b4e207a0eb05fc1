"""Which orchestrator URL the agent dials next, when it is given several.

A *pass* dials every configured URL once, in the configured order, and ends at the first
Hello; the reconnect backoff is the supervisor's business and applies between passes
only. A pass may begin at any URL (the one in use before a drop, or the next one after
it) and wraps around the list. A refusal with a leader hint puts the hinted URL first,
even if it is not configured; a pass follows one hint at most and never dials a URL
twice, so hints cannot make it loop. The plan does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["DialPlan", "url_key"]

_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


def url_key(url: str) -> tuple[str, str, int | None, str, str]:
    """What makes two URLs the same orchestrator: case-blind scheme and host, the port
    (the scheme's default when absent), the path (empty means ``/``) and the query."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return (
        scheme,
        (parts.hostname or "").lower(),
        port if port is not None else _DEFAULT_PORTS.get(scheme),
        parts.path or "/",
        parts.query,
    )


class DialPlan:
    """The dial order of one agent; :attr:`current` is the URL dialled or in use."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("a dial plan needs at least one URL")
        self._urls = tuple(urls)
        self._keys = [url_key(url) for url in self._urls]
        self.current = self._urls[0]
        self._queue: list[str] = []
        self._dialled: set[tuple[str, str, int | None, str, str]] = set()
        self._hint_followed = False

    def begin(self, first: str | None = None) -> None:
        """Start a pass over the configured URLs, from ``first`` when it is one of them
        (wrapping around); a ``first`` that is not configured (a leader hint that was in
        use) is dialled before them all."""
        start = 0
        queue: list[str] = []
        if first is not None:
            key = url_key(first)
            if key in self._keys:
                start = self._keys.index(key)
            else:
                queue.append(first)
        queue.extend(self._urls[start:] + self._urls[:start])
        self._queue = queue
        self._dialled = set()
        self._hint_followed = False

    def next(self) -> str | None:
        """The URL to dial now and make :attr:`current`; ``None`` once the pass is over."""
        while self._queue:
            url = self._queue.pop(0)
            key = url_key(url)
            if key in self._dialled:
                continue
            self._dialled.add(key)
            self.current = url
            return url
        return None

    def follow(self, hint: str) -> bool:
        """Dial ``hint`` next; ``False`` (and nothing changes) when this pass followed a
        hint already or has dialled that URL (the one that just refused, for one)."""
        if self._hint_followed or url_key(hint) in self._dialled:
            return False
        self._hint_followed = True
        self._queue.insert(0, hint)
        return True

    def after(self, url: str) -> str:
        """The configured URL after ``url`` (wrapping around); the first one when ``url``
        is not configured."""
        key = url_key(url)
        if key not in self._keys:
            return self._urls[0]
        return self._urls[(self._keys.index(key) + 1) % len(self._urls)]
