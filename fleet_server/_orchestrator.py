"""The :class:`Orchestrator` facade: options, the aiohttp app, listen and shutdown.

Shutdown follows one order: stop being ready → end event streams → tear down every
instance (pending commands fail ``INSTANCE_DISCONNECTED``, events fire) → close agent
sockets with 1001 → stop gRPC → close HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from aiohttp import web

from ._auth import AuthThrottle, KeyRing, fingerprint, normalize_keys
from ._events import EventBus, Listener
from ._fleet import Fleet
from ._transport import AgentTransport

if TYPE_CHECKING:
    from gateway import GrpcServer

__all__ = ["Orchestrator"]

log = logging.getLogger("fleet.server")

MIN_KEY_LENGTH: Final = 16
STRONG_KEY_LENGTH: Final = 32
# SPEC §10 Hygiene: a request's headers must arrive within 10 s of the connection (or of
# the previous response). aiohttp's keep-alive timer closes a connection still waiting
# for a whole request when it fires, so it is that bound; a running handler (SSE, the
# agent WebSocket) is never cut by it.
HEADER_TIMEOUT_S: Final = 10.0


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a boolean")
    return value


class Orchestrator:
    """The fleet's control plane in one object; see CONTRACT §6."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 7350,
        *,
        agent_key: str | Sequence[str],
        admin_key: str | Sequence[str] | None = None,
        api: bool = True,
        grpc_port: int | None = None,
        heartbeat_ms: int = 5000,
        command_timeout_ms: int = 10000,
        cors_origins: Sequence[str] = (),
        sse_query_auth: bool = False,
        trust_proxy: bool = False,
        production: bool = False,
        sse_stream_limit: int = 100,
        sse_ping_ms: int = 15000,
        auth_failure_limit: int = 10,
        auth_failure_window_ms: int = 60000,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError("host must be a non-empty string")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be an integer from 0 to 65535")
        if grpc_port is not None and (
            isinstance(grpc_port, bool)
            or not isinstance(grpc_port, int)
            or not 0 <= grpc_port <= 65535
        ):
            raise ValueError("grpc_port must be None or an integer from 0 to 65535")
        self.host = host
        self._requested_port = port
        self.api = _flag("api", api)
        self.heartbeat_ms = _positive_int("heartbeat_ms", heartbeat_ms)
        self.command_timeout_ms = _positive_int("command_timeout_ms", command_timeout_ms)
        self.sse_query_auth = _flag("sse_query_auth", sse_query_auth)
        self.trust_proxy = _flag("trust_proxy", trust_proxy)
        self.production = _flag("production", production)
        self.sse_stream_limit = _positive_int("sse_stream_limit", sse_stream_limit)
        self.sse_ping_ms = _positive_int("sse_ping_ms", sse_ping_ms)
        _positive_int("auth_failure_limit", auth_failure_limit)
        _positive_int("auth_failure_window_ms", auth_failure_window_ms)
        if isinstance(cors_origins, str) or not all(isinstance(o, str) for o in cors_origins):
            raise ValueError("cors_origins must be a list of strings")
        self.cors_origins = tuple(cors_origins)

        agent_keys = normalize_keys(agent_key, "agent_key")
        admin_keys = normalize_keys(admin_key, "admin_key")
        if not agent_keys:
            raise ValueError("agent_key: at least one agent key is required")
        for key in agent_keys:
            if any(c == "," or c.isspace() for c in key):
                raise ValueError("agent_key must not contain commas or whitespace")
        if self.api and not admin_keys:
            raise ValueError("admin_key is required when api=True")
        self._check_key_policy(agent_keys, admin_keys)
        self.grpc_port: int | None = grpc_port if self.api else None
        self._requested_grpc_port = self.grpc_port

        self.agent_keys = KeyRing(agent_keys)
        self.admin_keys = KeyRing(admin_keys)
        self.throttle = AuthThrottle(auth_failure_limit, auth_failure_window_ms)
        self.events = EventBus()
        self.fleet = Fleet(command_timeout_ms=self.command_timeout_ms, events=self.events, rng=rng)
        self.ready = False
        self._accepting = False
        self._state = "new"
        self._runner: web.AppRunner | None = None
        self._grpc: GrpcServer | None = None
        self.port: int = port
        self.transport = AgentTransport(
            fleet=self.fleet,
            agent_keys=self.agent_keys,
            throttle=self.throttle,
            heartbeat_ms=self.heartbeat_ms,
            trust_proxy=self.trust_proxy,
            is_accepting=lambda: self._accepting,
        )
        self._end_streams: Callable[[], Any] | None = None

    def _check_key_policy(self, agent_keys: Sequence[str], admin_keys: Sequence[str]) -> None:
        shared = set(agent_keys) & set(admin_keys)
        if shared:
            if self.production:
                raise ValueError("agent and admin key lists must not intersect in production")
            log.warning("agent and admin key lists intersect; use separate keys")
        if not self.production:
            return
        for key in (*agent_keys, *admin_keys):
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"keys must be at least {MIN_KEY_LENGTH} characters in production")
        for key in dict.fromkeys((*agent_keys, *admin_keys)):
            if len(key) < STRONG_KEY_LENGTH:
                log.warning(
                    "weak key %s: shorter than %d characters", fingerprint(key), STRONG_KEY_LENGTH
                )

    # --- app ----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application: ``/healthz``, ``/readyz`` and the agent endpoint at
        ``/`` always; the REST ``/v1`` routes and SSE when ``api`` is on."""
        from gateway import mount_health, mount_rest  # the HTTP surfaces over this core

        app = web.Application(handler_args={"access_log": None})
        mount_health(app, self)
        app.router.add_get("/", self.transport.handle)
        if self.api:
            self._end_streams = mount_rest(app, self)  # ends SSE streams first on shutdown
        return app

    # --- lifecycle ----------------------------------------------------------------

    async def listen(self) -> None:
        """Bind and serve; ``port`` holds the bound port afterwards. Idempotent."""
        if self._state != "new":
            return
        self._state = "starting"
        app = self.build_app()
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=HEADER_TIMEOUT_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._state = "new"
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.api and self.grpc_port is not None:
            from gateway import start_grpc  # the gRPC surface, imported only when served

            try:
                self._grpc = await start_grpc(self)
            except BaseException:
                await runner.cleanup()
                self._runner = None
                self._state = "new"
                raise
            self.grpc_port = self._grpc.port
        self._accepting = True
        self.ready = True
        self._state = "listening"

    async def shutdown(self) -> None:
        """Stop serving (idempotent; safe before ``listen()``)."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        if self._state == "closing":
            return
        self._state = "closing"
        self.ready = False
        self._accepting = False
        if self._end_streams is not None:
            result = self._end_streams()
            if asyncio.iscoroutine(result):
                await result
        if self._grpc is not None:
            await self._grpc.end_streams()
        await self.transport.close_all()
        self.fleet.close()  # the teardown's owed ``sync``, before listeners go
        if self._grpc is not None:
            await self._grpc.stop()
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.events.close()
        self._state = "closed"

    async def __aenter__(self) -> Self:
        await self.listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    # --- events -------------------------------------------------------------------

    def on(self, event_type: str, callback: Listener) -> Callable[[], None]:
        """Subscribe to a fleet event; returns the unsubscribe callable."""
        return self.events.on(event_type, callback)
