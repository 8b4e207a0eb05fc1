"""The agent's options, validated once, early, with errors that name the option.

The limits are the orchestrator's snapshot rules (SPEC §4, defined in
:mod:`fleet_agent.wire`): an agent configured past them would connect and then have
every snapshot rejected, so it refuses to start.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from ._failover import url_key
from ._options import Backoff, Capacity
from .wire import (
    MAX_ENDPOINT_URL,
    MAX_LABEL_KEY,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_NAME,
    URL_SCHEMES,
)

__all__ = ["AgentConfig", "leader_hint", "make_config"]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    urls: tuple[str, ...]
    """The orchestrator URLs in dial order; one or more."""
    key: str = field(repr=False)
    endpoint_url: str
    name: str
    labels: Mapping[str, str]
    capacity: Capacity
    auto_create: bool
    connect_timeout_ms: float | None
    backoff: Backoff


def _check_url(option: str, value: object, max_len: int | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{option} must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{option} must be at most {max_len} chars, got {len(value)}")
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError as exc:
        raise ValueError(f"{option} is not a valid URL") from exc
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ValueError(f"{option} must be an absolute ws://, wss://, http:// or https:// URL")
    if not hostname:
        raise ValueError(f"{option} must name a host")
    return value


def _check_urls(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        if "," in value:
            raise ValueError(
                "url must be one URL per string; pass a list for several "
                "(a comma-separated string is not split)"
            )
        return (_check_url("url", value),)
    if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray) or not value:
        raise ValueError("url must be a URL or a non-empty list of URLs")
    urls = tuple(_check_url(f"url[{i}]", url) for i, url in enumerate(value))
    seen: set[object] = set()
    for i, url in enumerate(urls):
        if url_key(url) in seen:
            raise ValueError(f"url[{i}] repeats an earlier URL")
        seen.add(url_key(url))
    return urls


def leader_hint(value: str | None, key: str) -> str | None:
    """``value`` (a standby's ``Fleet-Leader`` header) when it is a URL the agent could
    have been given, else ``None``; never one that carries the key (it would be logged)."""
    if not value or key in value:
        return None
    try:
        return _check_url("leader", value)
    except ValueError:
        return None


def _check_key(value: object) -> str:
    # The messages never quote the key.
    if not isinstance(value, str) or not value:
        raise ValueError("key must be a non-empty string")
    if any(ch == "," or not ("!" <= ch <= "~") for ch in value):
        raise ValueError("key must not contain commas, whitespace or non-ASCII characters")
    return value


def _check_name(value: object) -> str:
    if value is None:
        return socket.gethostname()[:MAX_NAME]
    if not isinstance(value, str):
        raise ValueError("name must be a string")
    if len(value) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} chars, got {len(value)}")
    return value


def _check_labels(value: object) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError("labels must be a mapping of str to str")
    if len(value) > MAX_LABELS:
        raise ValueError(f"labels must have at most {MAX_LABELS} entries, got {len(value)}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError("labels must map str to str")
        if len(k) > MAX_LABEL_KEY:
            raise ValueError(f"labels keys must be at most {MAX_LABEL_KEY} chars")
        if len(v) > MAX_LABEL_VALUE:
            raise ValueError(f"labels values must be at most {MAX_LABEL_VALUE} chars")
    return MappingProxyType(dict(value))


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError("connect_timeout_ms must be a positive number or None")
    return float(value)


def make_config(
    *,
    url: str | Sequence[str],
    key: str,
    endpoint_url: str,
    name: str | None,
    labels: Mapping[str, str] | None,
    capacity: Capacity | None,
    auto_create: bool,
    connect_timeout_ms: float | None,
    backoff: Backoff,
) -> AgentConfig:
    """Validate the options of :class:`~fleet_agent.FleetAgent`; ``ValueError`` names the option."""
    urls = _check_urls(url)
    key = _check_key(key)
    if any(key in one for one in urls):
        raise ValueError("url must not contain the key: it travels as a subprotocol only")
    if capacity is None:
        capacity = Capacity()
    elif not isinstance(capacity, Capacity):
        raise ValueError("capacity must be a Capacity or None")
    if not isinstance(auto_create, bool):
        raise ValueError("auto_create must be a bool")
    if not isinstance(backoff, Backoff):
        raise ValueError("backoff must be a Backoff")
    return AgentConfig(
        urls=urls,
        key=key,
        endpoint_url=_check_url("endpoint_url", endpoint_url, MAX_ENDPOINT_URL),
        name=_check_name(name),
        labels=_check_labels(labels),
        capacity=capacity,
        auto_create=auto_create,
        connect_timeout_ms=_check_timeout(connect_timeout_ms),
        backoff=backoff,
    )
