"""The orchestrator's options: every default and every check, in one frozen object.

:class:`OrchestratorOptions` is built two ways and validated the same way both times:
by ``Orchestrator(**keywords)`` (the embedded API, CONTRACT §6) through
:meth:`OrchestratorOptions.from_keywords`, and by the daemon from flags > env > YAML >
defaults (:mod:`._config`), which parses text into values and hands each one to
:func:`check_option` so that its error names where the value came from.

A check failure raises ``ValueError`` naming the option and never quoting a key.
Credentials are checked separately (:meth:`OrchestratorOptions.check_credentials`):
the daemon builds its options first and fills in development keys afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypedDict

from ._auth import fingerprint
from ._webhooks import Webhook

__all__ = [
    "MIN_KEY_LENGTH",
    "MIN_LEASE_MS",
    "STRONG_KEY_LENGTH",
    "OrchestratorKeywords",
    "OrchestratorOptions",
    "check_option",
    "normalize_keys",
]

log = logging.getLogger("fleet.server")

MIN_KEY_LENGTH: Final = 16
MIN_LEASE_MS: Final = 2000
_CLUSTER_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STRONG_KEY_LENGTH: Final = 32


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


# --- one check per kind of value; each returns the value or raises "<what> must …" ----


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be a boolean")
    return value


def _positive(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("must be an integer from 0 to 65535")
    return value


def _optional_port(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return _port(value)
    except ValueError:
        raise ValueError("must be None (off) or an integer from 0 to 65535") from None


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError("must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("must be a list of strings")
    return tuple(item.strip() for item in value if item.strip())


def _non_negative(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a non-negative integer")
    return value


def _optional_path(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be None (off) or a file path")
    return value.strip()


def _url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a valid port") from None
    return value.rstrip("/")


def _urls(value: Any) -> tuple[str, ...]:
    return tuple(_url(item) for item in _strings(value))


def _optional_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be None or an http:// or https:// URL")
    return _url(value.strip())


def _cluster(value: Any) -> str:
    if not isinstance(value, str) or not _CLUSTER_NAME.fullmatch(value):
        raise ValueError("must match [A-Za-z0-9_.-]{1,64}")
    return value


def _lease(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_LEASE_MS:
        raise ValueError(f"must be an integer of at least {MIN_LEASE_MS} (etcd's shortest lease)")
    return value


def _webhooks(value: Any) -> tuple[Webhook, ...]:
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        raise ValueError("must be a list of webhooks (url, events, secret)")
    return tuple(Webhook.parse(item, f"[{index}]") for index, item in enumerate(value))


def _label_name(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError("must be a label name of 1 to 64 characters")
    return value


def _agent_keys(value: Any) -> tuple[str, ...]:
    keys = _strings(value)
    if any(c == "," or c.isspace() for key in keys for c in key):
        raise ValueError("must not contain commas or whitespace")
    return keys


_CHECKS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "host": _host,
    "port": _port,
    "agent_keys": _agent_keys,
    "admin_keys": _strings,
    "api": _flag,
    "grpc_port": _optional_port,
    "heartbeat_ms": _positive,
    "command_timeout_ms": _positive,
    "cors_origins": _strings,
    "sse_query_auth": _flag,
    "trust_proxy": _flag,
    "production": _flag,
    "sse_stream_limit": _positive,
    "sse_ping_ms": _positive,
    "auth_failure_limit": _positive,
    "auth_failure_window_ms": _positive,
    "orphan_hold_ms": _positive,
    "state_path": _optional_path,
    "settle_ms": _non_negative,
    "etcd_endpoints": _urls,
    "cluster": _cluster,
    "advertise_url": _optional_url,
    "leader_lease_ms": _lease,
    "metrics_auth": _flag,
    "agent_tokens": _flag,
    "webhooks": _webhooks,
    "capacity_label": _label_name,
}

# The embedded keyword for an option where it differs from the field (one key or many).
_KEYWORDS: Final[Mapping[str, str]] = {"agent_key": "agent_keys", "admin_key": "admin_keys"}


def check_option(name: str, value: Any) -> Any:
    """``value`` checked (and normalized) as option ``name``; ``ValueError`` says why."""
    try:
        return _CHECKS[name](value)
    except ValueError as exc:
        text = str(exc)
        raise ValueError(f"{name}{'' if text.startswith('[') else ' '}{text}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratorOptions:
    """Every orchestrator option with its default (CONTRACT §6); checked on creation."""

    host: str = "0.0.0.0"
    port: int = 7350
    agent_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    api: bool = True
    grpc_port: int | None = None  # None: no gRPC; 0: an ephemeral port
    heartbeat_ms: int = 5000
    command_timeout_ms: int = 10000
    cors_origins: tuple[str, ...] = ()
    sse_query_auth: bool = False
    trust_proxy: bool = False
    production: bool = False  # the FLEET_ENV=production refusals
    sse_stream_limit: int = 100  # per surface: SSE streams, gRPC WatchEvents streams
    sse_ping_ms: int = 15000
    auth_failure_limit: int = 10
    auth_failure_window_ms: int = 60000
    orphan_hold_ms: int = 60_000  # ids of a vanished process stay taken this long
    state_path: str | None = None  # the membership store file; None: no store
    settle_ms: int = 15_000  # explicit-id creates wait at most this long after a start
    etcd_endpoints: tuple[str, ...] = ()  # leader election on etcd; empty: runs alone
    cluster: str = "default"
    advertise_url: str | None = None  # this node's API URL for others; None: derived
    leader_lease_ms: int = 5000
    metrics_auth: bool = False  # GET /metrics asks for the admin key or a token
    webhooks: tuple[Webhook, ...] = ()  # signed POSTs of fleet events (CONTRACT §14)
    capacity_label: str = "region"  # the label the capacity gauges are grouped by
    agent_tokens: bool = True  # per-instance agent tokens may be minted and join (§13)

    def __post_init__(self) -> None:
        for name in _CHECKS:
            object.__setattr__(self, name, check_option(name, getattr(self, name)))
        if not self.api:
            object.__setattr__(self, "grpc_port", None)  # gRPC is part of the API
        shared = set(self.agent_keys) & set(self.admin_keys)
        if shared and self.production:
            raise ValueError("agent and admin key lists must not intersect in production")
        if self.production and any(
            len(key) < MIN_KEY_LENGTH for key in (*self.agent_keys, *self.admin_keys)
        ):
            raise ValueError(f"keys must be at least {MIN_KEY_LENGTH} characters in production")

    @classmethod
    def from_keywords(cls, **keywords: Any) -> OrchestratorOptions:
        """Options from ``Orchestrator(...)`` keywords: ``agent_key`` / ``admin_key``
        take one key or a list; anything else is a field name."""
        values: dict[str, Any] = {}
        for keyword, value in keywords.items():
            name = _KEYWORDS.get(keyword, keyword)
            if name not in _CHECKS:
                raise TypeError(f"unknown orchestrator option {keyword!r}")
            if name in ("agent_keys", "admin_keys"):
                value = normalize_keys(value, keyword)
            values[name] = value
        return cls(**values)

    def check_credentials(self) -> None:
        """Raise unless the keys the options need are there; warn about weak ones."""
        if not self.agent_keys and not (self.agent_tokens and self.admin_keys):
            raise ValueError(
                "agent_key: at least one agent key is required "
                "(or none, with agent_tokens and an admin key: token-only mode)"
            )
        if self.api and not self.admin_keys:
            raise ValueError("admin_key is required when api=True")
        if self.metrics_auth and not self.admin_keys:
            raise ValueError("admin_key is required when metrics_auth=True")
        if set(self.agent_keys) & set(self.admin_keys):
            log.warning("agent and admin key lists intersect; use separate keys")
        if self.production:
            for key in dict.fromkeys((*self.agent_keys, *self.admin_keys)):
                if len(key) < STRONG_KEY_LENGTH:
                    log.warning(
                        "weak key %s: shorter than %d characters",
                        fingerprint(key),
                        STRONG_KEY_LENGTH,
                    )


class OrchestratorKeywords(TypedDict, total=False):
    """The keywords ``Orchestrator(...)`` takes besides ``host`` and ``port`` (typed)."""

    agent_key: str | Sequence[str]
    admin_key: str | Sequence[str] | None
    api: bool
    grpc_port: int | None
    heartbeat_ms: int
    command_timeout_ms: int
    cors_origins: Sequence[str]
    sse_query_auth: bool
    trust_proxy: bool
    production: bool
    sse_stream_limit: int
    sse_ping_ms: int
    auth_failure_limit: int
    auth_failure_window_ms: int
    orphan_hold_ms: int
    state_path: str | os.PathLike[str] | None
    settle_ms: int
    etcd_endpoints: Sequence[str]
    cluster: str
    advertise_url: str | None
    leader_lease_ms: int
    metrics_auth: bool
    webhooks: Sequence[Webhook | Mapping[str, Any]]
    capacity_label: str
    agent_tokens: bool
