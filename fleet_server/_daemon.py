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
from dataclasses import replace
from importlib import metadata
from typing import Any, Final

from ._collector import CollectorTuning
from ._config import ConfigError, build_parser, load_config
from ._etcd import EtcdUnavailableError
from ._options import OrchestratorOptions
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


def _dev_key(audience: str, flag: str, env: str) -> str:
    key = secrets.token_urlsafe(32)
    log.warning(
        "dev %s key generated: %s (pass %s or %s outside development)", audience, key, flag, env
    )
    return key


def _with_keys(options: OrchestratorOptions) -> OrchestratorOptions:
    """The options with every missing key generated (development), or a refusal
    (production: keys must be given). An admin key, no agent key and agent tokens on is
    token-only mode (CONTRACT §13): agents join with agent tokens only."""
    need_admin = options.api and not options.admin_keys
    if not options.agent_keys and options.agent_tokens and options.admin_keys:
        log.info("no agent key: token-only mode (agents join with agent tokens)")
        return options
    if options.production:
        if not options.agent_keys:
            raise ConfigError(
                "agent key required in production (--agent-key or FLEET_AGENT_KEY), "
                "or an admin key for token-only mode"
            )
        if need_admin:
            raise ConfigError("admin key required in production (--admin-key or FLEET_ADMIN_KEY)")
        return options
    if options.agent_keys and not need_admin:
        return options
    agent_keys = options.agent_keys or (_dev_key("agent", "--agent-key", "FLEET_AGENT_KEY"),)
    admin_keys = options.admin_keys
    if need_admin:
        admin_keys = (_dev_key("admin", "--admin-key", "FLEET_ADMIN_KEY"),)
    return replace(options, agent_keys=agent_keys, admin_keys=admin_keys)


async def _serve(orch: Orchestrator) -> int:
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
        options = orch.options
        _fail(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}")
        await orch.shutdown()
        return EXIT_FAILURE
    except EtcdUnavailableError as exc:
        _fail(str(exc))
        await orch.shutdown()
        return EXIT_CONFIG
    log.info(
        "orchestrator listening host=(%s) port=(%d) api=(%s) grpc=(%s) heartbeat=(%dms)%s",
        orch.options.host,
        orch.port,
        "/v1" if orch.options.api else "off",
        orch.grpc_port if orch.grpc_port is not None else "off",
        orch.options.heartbeat_ms,
        f" cluster=({orch.options.cluster})" if orch.options.etcd_endpoints else "",
    )
    transport = orch.transport
    collector = CollectorTuning(lambda: transport.closed_links, lambda: len(transport.links))
    collector.start()
    await stop.wait()
    await collector.stop()
    try:
        await orch.shutdown()
    except Exception:
        log.exception("shutdown failed")
        return EXIT_FAILURE
    return EXIT_OK


def raise_open_files_limit() -> int | None:
    """Raise this process's soft limit of open descriptors to its hard limit: each agent
    holds one socket, and distributions often start a process at a soft 1,024 under a
    hard limit many times that. Returns the limit now in force (None where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and 0 <= soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-files limit error=%s", exc)
        return None
    return soft


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
    log.debug("open-files limit=%s", raise_open_files_limit())
    try:
        orch = Orchestrator(options=_with_keys(config.options))
    except ValueError as exc:
        _fail(str(exc))
        return EXIT_CONFIG
    try:
        return _run(_serve(orch))
    except Exception:
        log.exception("orchestrator failed")
        return EXIT_FAILURE
