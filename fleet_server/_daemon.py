"""``rivalis-fleet``: the orchestrator as a YAML-configured daemon (SPEC §14).

Exit codes: 0 after a clean shutdown, 1 when startup or shutdown fails (a port in
use, say), 2 for invalid configuration.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Coroutine, Sequence
from importlib import metadata
from typing import Any, Final

from ._collector import CollectorTuning
from ._config import ConfigError, DaemonConfig, build_parser, load_config
from ._orchestrator import Orchestrator

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
TRACE: Final = 5

log = logging.getLogger("fleet.server")

_LEVELS: Final = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def _version() -> str:
    try:
        return metadata.version("rivalis-fleet")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0.0.0"


def _configure_logging(level: str) -> None:
    logging.addLevelName(TRACE, "TRACE")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(name)s ▸ %(message)s"))
    root = logging.getLogger("fleet")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    root.propagate = False


def _fail(message: str) -> None:
    print(f"rivalis-fleet: {message}", file=sys.stderr, flush=True)


def _dev_keys(config: DaemonConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    agent_keys, admin_keys = config.agent_keys, config.admin_keys
    if config.production:
        if not agent_keys:
            raise ConfigError("agent key required in production (--agent-key or FLEET_AGENT_KEY)")
        if config.api and not admin_keys:
            raise ConfigError("admin key required in production (--admin-key or FLEET_ADMIN_KEY)")
        return agent_keys, admin_keys
    if not agent_keys:
        key = secrets.token_urlsafe(32)
        log.warning(
            "dev agent key generated: %s (pass --agent-key or FLEET_AGENT_KEY outside development)",
            key,
        )
        agent_keys = (key,)
    if config.api and not admin_keys:
        key = secrets.token_urlsafe(32)
        log.warning(
            "dev admin key generated: %s (pass --admin-key or FLEET_ADMIN_KEY outside development)",
            key,
        )
        admin_keys = (key,)
    return agent_keys, admin_keys


async def _serve(orch: Orchestrator, config: DaemonConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            return  # further signals are ignored while shutting down
        received.append(sig.name)
        log.info("signal %s: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await orch.listen()
    except OSError as exc:
        _fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
        await orch.shutdown()
        return EXIT_FAILURE
    log.info(
        "orchestrator listening host=(%s) port=(%d) api=(%s) grpc=(%s) heartbeat=(%dms)",
        orch.host,
        orch.port,
        "/v1" if orch.api else "off",
        orch.grpc_port if orch.grpc_port is not None else "off",
        orch.heartbeat_ms,
    )
    collector = CollectorTuning(
        lambda: orch.transport.closed_links, lambda: len(orch.transport.links)
    )
    collector.start()
    await stop.wait()
    await collector.stop()
    try:
        await orch.shutdown()
    except Exception:
        log.exception("shutdown failed")
        return EXIT_FAILURE
    return EXIT_OK


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (every platform but Windows), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon; returns the process exit code."""
    parser = build_parser(_version())
    args = parser.parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        _fail(str(exc))
        return EXIT_CONFIG
    _configure_logging(config.log_level)
    try:
        agent_keys, admin_keys = _dev_keys(config)
        orch = Orchestrator(
            host=config.host,
            port=config.port,
            agent_key=agent_keys,
            admin_key=admin_keys or None,
            api=config.api,
            grpc_port=config.grpc_port,
            heartbeat_ms=config.heartbeat_ms,
            command_timeout_ms=config.command_timeout_ms,
            cors_origins=config.cors_origins,
            sse_query_auth=config.sse_query_auth,
            trust_proxy=config.trust_proxy,
            production=config.production,
        )
    except ValueError as exc:
        _fail(str(exc))
        return EXIT_CONFIG
    try:
        return _run(_serve(orch, config))
    except Exception:
        log.exception("orchestrator failed")
        return EXIT_FAILURE
