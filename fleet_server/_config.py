"""The daemon's configuration: defaults → YAML → ``FLEET_*`` env → flags (SPEC §14).

Everything lands in one frozen :class:`DaemonConfig`, validated here. Bad input raises
:class:`ConfigError` with one line naming the option and where it came from.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_PORT",
    "ConfigError",
    "DaemonConfig",
    "LogLevel",
    "build_parser",
    "load_config",
]

DEFAULT_PORT: Final = 7350
DEFAULT_GRPC_PORT: Final = 7351
LogLevel = Literal["trace", "debug", "info", "warn", "error"]
LOG_LEVELS: Final = get_args(LogLevel)
YAML_KEYS: Final = frozenset(
    {
        "host",
        "port",
        "agent_key",
        "admin_key",
        "api",
        "grpc_port",
        "heartbeat_ms",
        "command_timeout_ms",
        "cors_origins",
        "sse_query_auth",
        "trust_proxy",
        "log_level",
        "environment",
    }
)


class ConfigError(ValueError):
    """Invalid configuration; the message is the one line the daemon prints."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    agent_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    api: bool = True
    grpc_port: int | None = DEFAULT_GRPC_PORT
    heartbeat_ms: int = 5000
    command_timeout_ms: int = 10000
    cors_origins: tuple[str, ...] = ()
    sse_query_auth: bool = False
    trust_proxy: bool = False
    log_level: LogLevel = "info"
    production: bool = False


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
    add = parser.add_argument
    add("-H", "--host", metavar="HOST", help="bind address (env FLEET_HOST; default 0.0.0.0)")
    add(
        "-p",
        "--port",
        type=int,
        metavar="PORT",
        help=f"HTTP + agent WebSocket port (env FLEET_PORT; default {DEFAULT_PORT})",
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
    add("--no-api", action="store_false", dest="api", help="serve agents only (default: API on)")
    add(
        "--grpc-port",
        type=int,
        metavar="PORT",
        help=f"gRPC port (env FLEET_GRPC_PORT, 'off' disables; default {DEFAULT_GRPC_PORT})",
    )
    add("--no-grpc", action="store_const", const=None, dest="grpc_port", help="disable gRPC")
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
        "--trust-proxy",
        action="store_true",
        dest="trust_proxy",
        help="client IP from X-Forwarded-For (env FLEET_TRUST_PROXY; default false)",
    )
    add(
        "--heartbeat",
        type=int,
        dest="heartbeat_ms",
        metavar="MS",
        help="poll interval in ms (env FLEET_HEARTBEAT_MS; default 5000)",
    )
    add(
        "--command-timeout",
        type=int,
        dest="command_timeout_ms",
        metavar="MS",
        help="command ack timeout in ms (env FLEET_COMMAND_TIMEOUT_MS; default 10000)",
    )
    add(
        "--log-level",
        metavar="LEVEL",
        help="trace|debug|info|warn|error (env FLEET_LOG_LEVEL; default info)",
    )
    add("--config", metavar="PATH", help="YAML config file (keys: the snake_case option names)")
    add("-v", "--version", action="version", version=version)
    parser.add_argument_group(
        "environment", "FLEET_ENV=production enables the production key rules."
    )
    return parser


# --- value parsing ------------------------------------------------------------------


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where} must be true or false")


def _int(value: Any, where: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise ConfigError(f"{where} must be an integer") from None
    if not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer")
    if value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{where} must be {limit}")
    return value


def _port(value: Any, where: str) -> int:
    return _int(value, where, low=0, high=65535)


def _grpc_port(value: Any, where: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    return _port(value, where)


def _positive(value: Any, where: str) -> int:
    return _int(value, where, low=1)


def _keys(value: Any, where: str) -> tuple[str, ...]:
    items: list[Any]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"{where} must be a string or a list of strings")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where} must be a string or a list of strings")
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return tuple(out)


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _origins(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = _comma_list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _level(value: Any, where: str) -> LogLevel:
    if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
        level: LogLevel = value.strip().lower()  # type: ignore[assignment]
        return level
    raise ConfigError(f"{where} must be one of {'|'.join(LOG_LEVELS)}")


def _host(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value.strip()


def _environment(value: Any, where: str) -> bool:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value.strip().lower() == "production"


_PARSERS: Final[Mapping[str, Any]] = {
    "host": _host,
    "port": _port,
    "agent_key": _keys,
    "admin_key": _keys,
    "api": _bool,
    "grpc_port": _grpc_port,
    "heartbeat_ms": _positive,
    "command_timeout_ms": _positive,
    "cors_origins": _origins,
    "sse_query_auth": _bool,
    "trust_proxy": _bool,
    "log_level": _level,
    "environment": _environment,
}

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


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """Merge defaults, YAML, env and flags (in rising precedence) into a DaemonConfig."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    flags = vars(args)
    config_path = flags.get("config")
    if config_path is not None:
        for key, raw in _read_yaml(config_path).items():
            values[key] = _PARSERS[key](raw, f"YAML key {key} in {config_path}")
    for name, key in _ENV.items():
        raw = environ.get(name)
        if raw is None:
            continue
        if key in ("agent_key", "admin_key"):
            values[key] = _keys(_comma_list(raw), f"env {name}")
        else:
            values[key] = _PARSERS[key](raw, f"env {name}")
    for key, raw in flags.items():
        if key == "config":
            continue
        where = "--" + key.replace("_ms", "").replace("_", "-")
        if key in ("agent_key", "admin_key"):
            values[key] = _keys(list(raw), f"--{key.replace('_', '-')}")
        elif key == "cors_origins":
            values[key] = _origins(list(raw), "--cors")
        else:
            values[key] = _PARSERS[key](raw, where)
    return DaemonConfig(
        host=values.get("host", "0.0.0.0"),
        port=values.get("port", DEFAULT_PORT),
        agent_keys=values.get("agent_key", ()),
        admin_keys=values.get("admin_key", ()),
        api=values.get("api", True),
        grpc_port=values.get("grpc_port", DEFAULT_GRPC_PORT),
        heartbeat_ms=values.get("heartbeat_ms", 5000),
        command_timeout_ms=values.get("command_timeout_ms", 10000),
        cors_origins=values.get("cors_origins", ()),
        sse_query_auth=values.get("sse_query_auth", False),
        trust_proxy=values.get("trust_proxy", False),
        log_level=values.get("log_level", "info"),
        production=values.get("environment", False),
    )
