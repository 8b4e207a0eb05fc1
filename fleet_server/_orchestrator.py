"""The :class:`Orchestrator` facade: the composition root, listen and shutdown.

It builds the core from one :class:`~fleet_server._options.OrchestratorOptions` — the
authenticator, the event hub, the fleet service, the agent transport — and hands the
gateway the narrow :class:`~fleet_server._interfaces.Services` it mounts; it is the
only core module that imports ``gateway``.

Shutdown follows one order: stop being ready → end event streams → tear down every
instance (pending commands fail ``INSTANCE_DISCONNECTED``, events fire, ids become
orphan holds) → close agent sockets with 1001 → write the membership record → stop
gRPC → close HTTP.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, Unpack

import aiohttp
from aiohttp import web

from ._agent_token_service import AgentTokenInfo, AgentTokenService
from ._agent_tokens import AgentTokenBook, MintedAgentToken
from ._auth import Authenticator
from ._cluster import Coordinator
from ._events import EventHub, Listener
from ._fleet import Fleet
from ._interfaces import Services
from ._metrics import NULL_METER, CapacityFigures, FleetMetrics, Meter, package_version
from ._options import OrchestratorKeywords, OrchestratorOptions
from ._transport import AgentTransport
from ._webhooks import WebhookSender

if TYPE_CHECKING:
    from gateway import GrpcServer

__all__ = ["HEADER_TIMEOUT_S", "Orchestrator", "OrchestratorStatus"]

log = logging.getLogger("fleet.server")

# SPEC §10 Hygiene: a request's headers must arrive within 10 s of the connection (or of
# the previous response). aiohttp's keep-alive timer closes a connection still waiting
# for a whole request when it fires, so it is that bound; a running handler (SSE, the
# agent WebSocket) is never cut by it.
HEADER_TIMEOUT_S: Final = 10.0


class OrchestratorStatus(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    LISTENING = "listening"
    CLOSING = "closing"
    CLOSED = "closed"


class _Default(enum.Enum):
    DEFAULT = "default"


_DEFAULT: Final = _Default.DEFAULT


def _agent_token_book(options: OrchestratorOptions) -> AgentTokenBook | None:
    """Per-instance agent tokens (CONTRACT §13), unless ``agent_tokens`` is off."""
    return AgentTokenBook(options.admin_keys, options.cluster) if options.agent_tokens else None


def _authenticator(
    options: OrchestratorOptions, book: AgentTokenBook | None, meter: Meter
) -> Authenticator:
    return Authenticator(
        agent_keys=options.agent_keys,
        admin_keys=options.admin_keys,
        trust_proxy=options.trust_proxy,
        failure_limit=options.auth_failure_limit,
        failure_window_ms=options.auth_failure_window_ms,
        agent_tokens=book,
        meter=meter,
    )


class Orchestrator:
    """The fleet's control plane in one object; see CONTRACT §6.

    ``Orchestrator(host, port, agent_key=…, admin_key=…, …)`` takes every option of
    :class:`OrchestratorOptions` as a keyword (``agent_key`` / ``admin_key``: one key or
    a list), or a ready ``options=`` object; ``rng`` seeds placement ties (tests).
    ``metrics=False`` stops the hot-path tallies and the loop-lag task (``/metrics``
    still answers, with gauges only): the benchmark's "metrics off" side.
    """

    def __init__(
        self,
        host: str | _Default = _DEFAULT,
        port: int | _Default = _DEFAULT,
        *,
        options: OrchestratorOptions | None = None,
        rng: random.Random | None = None,
        metrics: bool = True,
        **keywords: Unpack[OrchestratorKeywords],
    ) -> None:
        given = {k: v for k, v in (("host", host), ("port", port)) if v is not _DEFAULT}
        if options is None:
            options = OrchestratorOptions.from_keywords(**given, **keywords)
        elif given or keywords:
            raise TypeError("pass options= or option keywords, not both")
        options.check_credentials()
        self.options: Final = options
        self._hub = EventHub()
        self.metrics: Final = self._new_metrics()  # this orchestrator's own registry
        self._meter: Meter = self.metrics if metrics else NULL_METER
        book = _agent_token_book(options)
        self._auth = _authenticator(options, book, self._meter)
        self.fleet: Final = Fleet(
            command_timeout_ms=options.command_timeout_ms,
            events=self._hub,
            orphan_hold_ms=options.orphan_hold_ms,
            rng=rng,
            meter=self._meter,
        )
        self.transport: Final = AgentTransport(  # live links and closed count (diagnostics)
            fleet=self.fleet,
            auth=self._auth,
            heartbeat_ms=options.heartbeat_ms,
            is_accepting=lambda: self._status is OrchestratorStatus.LISTENING,
            leads=lambda: self._cluster.leads(),
            leader_hint=lambda: self._cluster.leader_hint("agent"),
            meter=self._meter,
        )
        self._cluster = Coordinator(
            options,
            self.fleet,
            close_agents=self.transport.close_all,
            end_streams=self._hub.end_all,
            agent_tokens=book,
        )
        self._agent_tokens = self._agent_token_service(book)
        self._status = OrchestratorStatus.NEW
        self._runner: web.AppRunner | None = None
        self._grpc: GrpcServer | None = None
        self._port = options.port
        self._grpc_port = options.grpc_port
        self._end_streams: Callable[[], Awaitable[None]] | None = None
        self._webhooks: list[WebhookSender] = []
        self._webhook_session: aiohttp.ClientSession | None = None

    def _agent_token_service(self, book: AgentTokenBook | None) -> AgentTokenService:
        return AgentTokenService(
            book,
            holders=self.transport.token_instances,
            kick=self.transport.revoke,
            flush=self._cluster.flush_membership,
            leads=self._cluster.leads,
        )

    def _new_metrics(self) -> FleetMetrics:
        return FleetMetrics(
            census=lambda: self.fleet.census(),
            streams=self._streams,
            dropped=lambda kind: self._hub.dropped[kind],
            leads=lambda: self._cluster.leads(),
            version=package_version(),
            capacity=self._capacity_figures,
        )

    def _streams(self, kind: str) -> int:
        """Event streams open now: the hub's subscriptions, and each webhook's delivery."""
        return len(self._webhooks) if kind == "webhook" else self._hub.count(kind)

    def _capacity_figures(self) -> list[CapacityFigures]:
        label = self.options.capacity_label
        unlimited = float("inf")
        return [
            (
                row.labels.get(label) or "",
                unlimited if row.free_room_slots is None else row.free_room_slots,
                unlimited if row.free_connections is None else row.free_connections,
            )
            for row in self.fleet.capacity(label)
        ]

    # --- what embedders read ------------------------------------------------------

    @property
    def port(self) -> int:
        """The HTTP + agent port: the bound one once listening (``port=0`` included)."""
        return self._port

    @property
    def grpc_port(self) -> int | None:
        """The gRPC port (bound once listening), or None without gRPC."""
        return self._grpc_port

    @property
    def ready(self) -> bool:
        """Whether the orchestrator is listening and accepting (``/readyz``)."""
        return self._status is OrchestratorStatus.LISTENING

    @property
    def status(self) -> OrchestratorStatus:
        """Where the orchestrator is in its lifecycle: new → starting → listening →
        closing → closed."""
        return self._status

    def on(self, event_type: str, callback: Listener) -> Callable[[], None]:
        """Subscribe to a fleet event; returns the unsubscribe callable."""
        return self._hub.on(event_type, callback)

    # --- agent tokens (CONTRACT §13, docs/agent-tokens.md) ------------------------

    def create_agent_token(
        self,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        ttl_s: int | None = None,
    ) -> MintedAgentToken:
        """A per-instance agent token binding ``name`` and ``labels`` (when given)."""
        return self._agent_tokens.create(name, labels, ttl_s)

    def agent_tokens(self) -> list[AgentTokenInfo]:
        """The unexpired agent tokens, oldest first, with the instances holding each."""
        return self._agent_tokens.list()

    async def revoke_agent_token(self, token_id: str) -> None:
        """Revoke: agents holding it are closed with 4011 and refused from now on."""
        await self._agent_tokens.revoke(token_id)

    # --- app ----------------------------------------------------------------------

    def _services(self) -> Services:
        return Services(
            options=self.options,
            fleet=self.fleet,
            cluster=self._cluster,
            auth=self._auth,
            hub=self._hub,
            is_ready=lambda: self.ready,
            metrics=self.metrics,
            meter=self._meter,
            agent_tokens=self._agent_tokens,
        )

    def build_app(self) -> web.Application:
        """The aiohttp application: ``/healthz``, ``/readyz``, ``/metrics`` and the agent
        endpoint at ``/`` always; the REST ``/v1`` routes, SSE and the dashboard (``GET
        /`` from a browser, ``/dashboard``) when ``api`` is on."""
        # the HTTP surfaces over this core
        from gateway import (
            mount_agents,
            mount_dashboard,
            mount_health,
            mount_metrics,
            mount_rest,
        )

        services = self._services()
        app = web.Application(handler_args={"access_log": None})
        mount_health(app, services)
        mount_metrics(app, services)
        if self.options.api:
            self._end_streams = mount_rest(app, services)  # ends SSE streams first on shutdown
            mount_dashboard(app, agents=self.transport.handle)
        else:
            mount_agents(app, services, self.transport.handle)
        return app

    # --- lifecycle ----------------------------------------------------------------

    async def listen(self) -> None:
        """Bind and serve; ``port`` holds the bound port afterwards. Idempotent."""
        if self._status is not OrchestratorStatus.NEW:
            return
        self._status = OrchestratorStatus.STARTING
        try:
            await self._cluster.start()
            if self._meter is not NULL_METER:
                self.metrics.lag.start()
            await self._start_http()
            await self._start_grpc()
            await self._cluster.listening(self._port, self._grpc_port)
            await self._start_webhooks()
        except BaseException:
            await self._stop_webhooks()
            await self.metrics.lag.stop()
            await self._cluster.stop()
            if self._grpc is not None:
                await self._grpc.stop()
                self._grpc = None
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            self._status = OrchestratorStatus.NEW
            raise
        self._status = OrchestratorStatus.LISTENING

    async def _start_http(self) -> None:
        # The HTTP server: envelopes for unparsable requests, every waiting connection
        # accepted at each loop turn (uvloop accepts one per turn).
        from gateway import AcceptingSite, FleetRunner

        runner = FleetRunner(
            self.build_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=HEADER_TIMEOUT_S,
        )
        await runner.setup()
        site = AcceptingSite(runner, self.options.host, self.options.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self._port = int(addresses[0][1])

    async def _start_webhooks(self) -> None:
        if not self.options.webhooks:
            return
        self._webhook_session = aiohttp.ClientSession()
        self._webhooks = [
            WebhookSender(hook, self._hub, self._webhook_session) for hook in self.options.webhooks
        ]

    async def _stop_webhooks(self) -> None:
        senders, self._webhooks = self._webhooks, []
        for sender in senders:
            await sender.close()
        session, self._webhook_session = self._webhook_session, None
        if session is not None:
            await session.close()

    async def _start_grpc(self) -> None:
        if self.options.grpc_port is None:
            return
        from gateway import start_grpc  # the gRPC surface, imported only when served

        self._grpc = await start_grpc(self._services())
        self._grpc_port = self._grpc.port

    async def shutdown(self) -> None:
        """Stop serving (idempotent; safe before ``listen()``)."""
        if self._status in (OrchestratorStatus.NEW, OrchestratorStatus.CLOSED):
            self._status = OrchestratorStatus.CLOSED
            return
        if self._status is OrchestratorStatus.CLOSING:
            return
        self._status = OrchestratorStatus.CLOSING
        if self._end_streams is not None:
            await self._end_streams()
        if self._grpc is not None:
            await self._grpc.end_streams()
        await self.transport.close_all()
        self.fleet.close()  # the teardown's owed ``sync``, before listeners go
        await self._cluster.stop()  # the record with every process still connected
        await self._stop_webhooks()
        if self._grpc is not None:
            await self._grpc.stop()
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._hub.close()
        await self.metrics.lag.stop()
        self._status = OrchestratorStatus.CLOSED

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
