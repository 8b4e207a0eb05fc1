"""The daemon's configuration: defaults → YAML → ``FLEET_*`` env → flags (SPEC §14).

This module only *parses*: each source's text becomes a typed value, which
:func:`~fleet_server._options.check_option` checks, so an error names the option and
where it came from in one line (:class:`ConfigError`). The defaults and checks
themselves live once, in :class:`~fleet_server._options.OrchestratorOptions`; the
daemon adds two of its own: gRPC on port 7351 and the log level.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

from ._options import OrchestratorOptions, check_option

__all__ = [
    "DEFAULT_GRPC_PORT",
    "ConfigError",
    "DaemonConfig",
    "LogLevel",
    "build_parser",
    "load_config",
]

DEFAULT_GRPC_PORT: Final = 7351  # the daemon serves gRPC unless told not to
LogLevel = Literal["trace", "debug", "info", "warn", "error"]
LOG_LEVELS: Final = get_args(LogLevel)
_OPTION_DEFAULTS: Final = {f.name: f.default for f in fields(OrchestratorOptions)}


class ConfigError(ValueError):
    """Invalid configuration; the message is the one line the daemon prints."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The daemon's settings: the orchestrator's options (keys may still be missing:
    the daemon generates development keys) and the log level."""

    options: OrchestratorOptions
    log_level: LogLevel = "info"


HELP_EPILOG: Final = """\
Keys: when --agent-key / --admin-key (or their env vars or YAML keys) are omitted, a
development key is generated (32 random bytes, base64url) and printed once at startup.
Generated keys are refused under FLEET_ENV=production, where keys must be given.
Env key lists are comma-separated, so keys rotate by listing old and new together:
FLEET_AGENT_KEY="old,new". Precedence: flags > env > YAML (--config) > defaults.
"""


def build_parser(version: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rivalis-fleet",
        description="The rivalis-fleet orchestrator: agent WebSocket, REST /v1 with SSE, gRPC.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    _add_listen_flags(parser.add_argument)
    _add_api_flags(parser.add_argument)
    _add_http_flags(parser.add_argument)
    _add_tuning_flags(parser.add_argument)
    _add_cluster_flags(parser.add_argument)
    add = parser.add_argument
    add("--config", metavar="PATH", help="YAML config file (keys: the snake_case option names)")
    add("-v", "--version", action="version", version=version)
    parser.add_argument_group(
        "environment", "FLEET_ENV=production enables the production key rules."
    )
    return parser


Add = Callable[..., Any]


def _add_listen_flags(add: Add) -> None:
    defaults = _OPTION_DEFAULTS
    add(
        "-H",
        "--host",
        metavar="HOST",
        help=f"bind address (env FLEET_HOST; default {defaults['host']})",
    )
    add(
        "-p",
        "--port",
        type=int,
        metavar="PORT",
        help=f"HTTP + agent WebSocket port (env FLEET_PORT; default {defaults['port']})",
    )
    add(
        "--agent-key",
        action="append",
        dest="agent_key",
        metavar="KEY",
        help="agent key, repeatable (env FLEET_AGENT_KEY, comma list; default: generated)",
    )
    add(
        "--admin-key",
        action="append",
        dest="admin_key",
        metavar="KEY",
        help="admin key, repeatable (env FLEET_ADMIN_KEY, comma list; default: generated)",
    )


def _add_api_flags(add: Add) -> None:
    add("--no-api", action="store_false", dest="api", help="serve agents only (default: API on)")
    add(
        "--grpc-port",
        type=int,
        metavar="PORT",
        help=f"gRPC port (env FLEET_GRPC_PORT, 'off' disables; default {DEFAULT_GRPC_PORT})",
    )
    add("--no-grpc", action="store_const", const=None, dest="grpc_port", help="disable gRPC")


def _add_http_flags(add: Add) -> None:
    add(
        "--cors",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="allowed CORS origin, repeatable (env FLEET_CORS_ORIGINS, comma list; default off)",
    )
    add(
        "--sse-query-auth",
        action="store_true",
        dest="sse_query_auth",
        help="accept ?key= on /v1/events (env FLEET_SSE_QUERY_AUTH; default false)",
    )
    add(
        "--metrics-auth",
        action="store_true",
        dest="metrics_auth",
        help="GET /metrics needs the admin key or a token (env FLEET_METRICS_AUTH; default false)",
    )
    add(
        "--no-agent-tokens",
        action="store_false",
        dest="agent_tokens",
        help="no per-instance agent tokens (env FLEET_AGENT_TOKENS; default on)",
    )
    add(
        "--trust-proxy",
        action="store_true",
        dest="trust_proxy",
        help="client IP from X-Forwarded-For (env FLEET_TRUST_PROXY; default false)",
    )


def _add_tuning_flags(add: Add) -> None:
    defaults = _OPTION_DEFAULTS
    add(
        "--heartbeat",
        type=int,
        dest="heartbeat_ms",
        metavar="MS",
        help=(f"poll interval in ms (env FLEET_HEARTBEAT_MS; default {defaults['heartbeat_ms']})"),
    )
    add(
        "--command-timeout",
        type=int,
        dest="command_timeout_ms",
        metavar="MS",
        help=(
            "command ack timeout in ms (env FLEET_COMMAND_TIMEOUT_MS; "
            f"default {defaults['command_timeout_ms']})"
        ),
    )
    add(
        "--log-level",
        metavar="LEVEL",
        help="trace|debug|info|warn|error (env FLEET_LOG_LEVEL; default info)",
    )


def _add_cluster_flags(add: Add) -> None:
    defaults = _OPTION_DEFAULTS
    add(
        "--orphan-hold",
        type=int,
        dest="orphan_hold_ms",
        metavar="MS",
        help=(
            "how long a vanished game server's room ids stay taken, in ms "
            f"(env FLEET_ORPHAN_HOLD_MS; default {defaults['orphan_hold_ms']})"
        ),
    )
    add(
        "--state",
        dest="state_path",
        metavar="PATH",
        help="membership store file, kept across restarts (env FLEET_STATE; default none)",
    )
    add(
        "--settle",
        type=int,
        dest="settle_ms",
        metavar="MS",
        help=(
            "after a start or takeover, explicit-id creates wait at most this long for "
            f"recorded game servers (env FLEET_SETTLE_MS; default {defaults['settle_ms']})"
        ),
    )
    add(
        "--etcd",
        action="append",
        dest="etcd_endpoints",
        metavar="URL",
        help="etcd endpoint for leader election, repeatable (env FLEET_ETCD, comma list)",
    )
    add(
        "--cluster",
        metavar="NAME",
        help=f"cluster name in etcd (env FLEET_CLUSTER; default {defaults['cluster']})",
    )
    add(
        "--advertise-url",
        metavar="URL",
        help="this node's API URL as other nodes and clients reach it (env FLEET_ADVERTISE_URL)",
    )
    add(
        "--leader-lease",
        type=int,
        dest="leader_lease_ms",
        metavar="MS",
        help=(
            f"leader lease in ms (env FLEET_LEADER_LEASE_MS; default {defaults['leader_lease_ms']})"
        ),
    )


# --- value parsing: text into typed values; the checks are the options' own -----------


def _bool(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _int(value: Any, where: str) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer")
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise ConfigError(f"{where} must be an integer") from None
    return value


def _grpc_port(value: Any, where: str) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    return _int(value, where)


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _keys(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(dict.fromkeys(item.strip() for item in value if item.strip()))
    raise ConfigError(f"{where} must be a string or a list of strings")


def _optional_text(value: Any, where: str) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _origins(value: Any, where: str) -> Any:
    return _comma_list(value) if isinstance(value, str) else value


def _text(value: Any, where: str) -> Any:
    return value


def _level(value: Any, where: str) -> LogLevel:
    if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
        level: LogLevel = value.strip().lower()  # type: ignore[assignment]
        return level
    raise ConfigError(f"{where} must be one of {'|'.join(LOG_LEVELS)}")


def _environment(value: Any, where: str) -> bool:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value.strip().lower() == "production"


Parser = Callable[[Any, str], Any]

# YAML key (the snake_case option name) -> (options field, parser); None: the daemon's own
_SETTINGS: Final[Mapping[str, tuple[str | None, Parser]]] = {
    "host": ("host", _text),
    "port": ("port", _int),
    "agent_key": ("agent_keys", _keys),
    "admin_key": ("admin_keys", _keys),
    "api": ("api", _bool),
    "grpc_port": ("grpc_port", _grpc_port),
    "heartbeat_ms": ("heartbeat_ms", _int),
    "command_timeout_ms": ("command_timeout_ms", _int),
    "cors_origins": ("cors_origins", _origins),
    "sse_query_auth": ("sse_query_auth", _bool),
    "trust_proxy": ("trust_proxy", _bool),
    "orphan_hold_ms": ("orphan_hold_ms", _int),
    "state_path": ("state_path", _optional_text),
    "settle_ms": ("settle_ms", _int),
    "etcd_endpoints": ("etcd_endpoints", _origins),
    "cluster": ("cluster", _text),
    "advertise_url": ("advertise_url", _optional_text),
    "leader_lease_ms": ("leader_lease_ms", _int),
    "metrics_auth": ("metrics_auth", _bool),
    "agent_tokens": ("agent_tokens", _bool),
    "webhooks": ("webhooks", _text),
    "capacity_label": ("capacity_label", _text),
    "log_level": (None, _level),
    "environment": ("production", _environment),
}
YAML_KEYS: Final = frozenset(_SETTINGS)
_LISTS: Final = frozenset(
    {"agent_key", "admin_key", "cors_origins", "etcd_endpoints"}
)  # comma lists in env

_ENV: Final[Mapping[str, str]] = {
    "FLEET_HOST": "host",
    "FLEET_PORT": "port",
    "FLEET_AGENT_KEY": "agent_key",
    "FLEET_ADMIN_KEY": "admin_key",
    "FLEET_GRPC_PORT": "grpc_port",
    "FLEET_HEARTBEAT_MS": "heartbeat_ms",
    "FLEET_COMMAND_TIMEOUT_MS": "command_timeout_ms",
    "FLEET_CORS_ORIGINS": "cors_origins",
    "FLEET_SSE_QUERY_AUTH": "sse_query_auth",
    "FLEET_TRUST_PROXY": "trust_proxy",
    "FLEET_ORPHAN_HOLD_MS": "orphan_hold_ms",
    "FLEET_STATE": "state_path",
    "FLEET_SETTLE_MS": "settle_ms",
    "FLEET_ETCD": "etcd_endpoints",
    "FLEET_CLUSTER": "cluster",
    "FLEET_ADVERTISE_URL": "advertise_url",
    "FLEET_LEADER_LEASE_MS": "leader_lease_ms",
    "FLEET_METRICS_AUTH": "metrics_auth",
    "FLEET_AGENT_TOKENS": "agent_tokens",
    "FLEET_LOG_LEVEL": "log_level",
    "FLEET_ENV": "environment",
}


def _read_yaml(path: str) -> dict[str, Any]:
    where = f"--config {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read file ({exc.strerror or exc})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of option names to values")
    for key in data:
        if key not in YAML_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}")
    return data


def _flag_name(key: str) -> str:
    if key in ("agent_key", "admin_key"):
        return "--" + key.replace("_", "-")
    if key == "cors_origins":
        return "--cors"
    if key in ("state_path", "etcd_endpoints"):
        return "--" + key.split("_")[0]
    return "--" + key.replace("_ms", "").replace("_", "-")


def _setting(key: str, raw: Any, where: str) -> tuple[str | None, Any]:
    """(options field or None, the parsed and checked value) of one source's ``key``."""
    field, parse = _SETTINGS[key]
    value = parse(raw, where)
    if field is None:
        return None, value
    try:
        return field, check_option(field, value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _sources(args: argparse.Namespace, environ: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """Every given setting as (YAML key, raw value, where), in rising precedence."""
    flags = vars(args)
    given: list[tuple[str, Any, str]] = []
    config_path = flags.get("config")
    if config_path is not None:
        for key, raw in _read_yaml(config_path).items():
            given.append((key, raw, f"YAML key {key} in {config_path}"))
    for name, key in _ENV.items():
        if name in environ:
            raw = environ[name]
            given.append((key, _comma_list(raw) if key in _LISTS else raw, f"env {name}"))
    for key, raw in flags.items():
        if key != "config":
            given.append((key, list(raw) if isinstance(raw, list) else raw, _flag_name(key)))
    return given


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """Merge defaults, YAML, env and flags (in rising precedence) into a DaemonConfig."""
    values: dict[str, Any] = {"grpc_port": DEFAULT_GRPC_PORT}
    log_level: LogLevel = "info"
    for key, raw, where in _sources(args, os.environ if environ is None else environ):
        field, value = _setting(key, raw, where)
        if field is None:
            log_level = value
        else:
            values[field] = value
    try:
        options = OrchestratorOptions(**values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return DaemonConfig(options=options, log_level=log_level)
