"""FleetAgent: keeps one game server joined to the orchestrator.

The agent holds the state the host sees (status, instance id, pending ``drain()``
waits, the destroy subscription) and starts one supervisor task per ``connect()``. The
parts live in their own modules: :mod:`~fleet_agent._supervisor` dials the orchestrator
URLs in turn (:mod:`~fleet_agent._failover`), with jittered backoff between passes, until
a Hello and redials after every drop (new instance id, same process uid),
:mod:`~fleet_agent._connection` is one connection, :mod:`~fleet_agent._frames` answers
Polls with the snapshot and Commands with an Ack after their host call finished, and
:mod:`~fleet_agent._shutdown` is the graceful shutdown on a signal. ``disconnect()``, a
``connect_timeout_ms`` expiry or a protocol mismatch end the supervisor. Network
failures are logged on ``fleet.agent`` and never raise into the host; only the calls
that wait on the network raise, with the types of :mod:`fleet_agent._errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import secrets
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Final

from rivalis.fleet.v3 import agent_pb2

from ._config import AgentConfig, make_config
from ._errors import AgentTimeoutError, ConnectionClosedError, FleetAgentError
from ._frames import FrameHandler
from ._host import DestroyNotifier, RoomHost, RoomView, SupportsSeatLedger
from ._log import logger
from ._options import Backoff, Capacity
from ._seats import SeatLedger
from ._shutdown import GracefulShutdown
from ._snapshot import Identity, Snapshot, SnapshotStatus
from ._status import LIVE, AgentStatus
from ._supervisor import Supervisor

__all__ = ["FleetAgent"]

_EMPTY_RECHECK_S: Final = 0.2
_DEFAULT_BACKOFF: Final = Backoff()


def _agent_version() -> str:
    try:
        return importlib.metadata.version("rivalis-fleet")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _identity(config: AgentConfig, process_uid: str) -> Identity:
    return Identity(
        name=config.name,
        process_uid=process_uid,
        agent_version=_agent_version(),
        endpoint_url=config.endpoint_url,
        labels=config.labels,
        capacity=config.capacity,
        auto_create=config.auto_create,
    )


def _fail(future: asyncio.Future[None] | None, exc: BaseException) -> None:
    """Fail ``future`` without an "exception never retrieved" report if nobody awaits it."""
    if future is not None and not future.done():
        future.set_exception(exc)
        future.exception()


class FleetAgent:
    """Joins a :class:`~fleet_agent.RoomHost` to the orchestrator at ``url``.

    ``url`` is one URL or a list of them (the nodes of a cluster): the agent dials them
    in order, follows a standby's leader hint, and waits its backoff only after a whole
    pass without a Hello. ``connect()`` resolves on the first Hello and the agent then
    stays joined, redialling after every drop, until ``disconnect()``. Use it as an
    async context manager to pair the two.

    Made over a host with ``attach_seat_ledger`` (a :class:`~fleet_agent.RoomManager`),
    the agent hands it the verifier of seat tickets signed for its ``key`` at once, so
    ``room.accept_ticket()`` works offline and before ``connect()``; the accepted
    reservations are reported from the next poll on. A second agent made over the same
    host takes that over.
    """

    def __init__(
        self,
        host: RoomHost,
        *,
        url: str | Sequence[str],
        key: str,
        endpoint_url: str,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        capacity: Capacity | None = None,
        auto_create: bool = True,
        connect_timeout_ms: float | None = None,
        backoff: Backoff = _DEFAULT_BACKOFF,
    ) -> None:
        if not isinstance(host, RoomHost):
            raise TypeError(
                "host must implement RoomHost "
                "(room_types, rooms, create_room, destroy_room), e.g. a RoomManager"
            )
        self._host = host
        self._config: AgentConfig = make_config(
            url=url,
            key=key,
            endpoint_url=endpoint_url,
            name=name,
            labels=labels,
            capacity=capacity,
            auto_create=auto_create,
            connect_timeout_ms=connect_timeout_ms,
            backoff=backoff,
        )
        self._process_uid = "p_" + secrets.token_hex(12)
        self._seats = SeatLedger(self._config.key)
        if isinstance(host, SupportsSeatLedger):
            host.attach_seat_ledger(self._seats)
        self._snapshot = Snapshot(_identity(self._config, self._process_uid), self._seats)
        self._status = AgentStatus.CLOSED
        self._instance_id: str | None = None
        self._supervisor_task: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] | None = None
        self._waiters: list[tuple[SnapshotStatus, asyncio.Future[None]]] = []
        self._unsubscribe: Callable[[], None] | None = None
        frames = FrameHandler(
            host,
            self._config,
            self._snapshot,
            apply_status=self._apply_status,
            on_echo=self._settle_waiters,
        )
        self._supervisor = Supervisor(
            self._config,
            on_hello=self._joined,
            on_lost=self._lost,
            handle=frames.answer,
            polls=lambda: frames.polls,
        )
        self._shutdown = GracefulShutdown(
            self, host, report_draining=lambda: self._apply_status("draining")
        )

    # -- read-only state -------------------------------------------------------------

    @property
    def status(self) -> AgentStatus:
        """``closed`` | ``connecting`` | ``connected`` | ``draining``."""
        return self._status

    @property
    def instance_id(self) -> str | None:
        """The id the orchestrator minted for the current connection; ``None`` between them."""
        return self._instance_id

    @property
    def url(self) -> str:
        """The orchestrator URL being dialled or in use; the first one before ``connect()``."""
        return self._supervisor.url

    @property
    def process_uid(self) -> str:
        """``p_`` + 24 hex chars, fixed for this agent, stable across reconnects."""
        return self._process_uid

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def agent_version(self) -> str:
        return self._snapshot.identity.agent_version

    def __repr__(self) -> str:
        return (
            f"<FleetAgent name={self._config.name!r} status={self._status.value!r} "
            f"instance_id={self._instance_id!r}>"
        )

    # -- lifecycle -------------------------------------------------------------------

    async def connect(self) -> None:
        """Join the orchestrator; resolves on the first Hello.

        Returns at once when connected; concurrent calls share one outcome. Retries
        forever unless ``connect_timeout_ms`` is set (then :class:`AgentTimeoutError`, also
        a ``TimeoutError``). Raises :class:`ProtocolMismatchError` when the orchestrator
        speaks another protocol and :class:`ConnectionClosedError` when ``disconnect()``
        ends the wait.
        """
        if self._status in LIVE:
            return
        if self._status is AgentStatus.CLOSED:
            previous = self._supervisor_task
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if self._status is AgentStatus.CLOSED:
                self._start()
        connected = self._connected
        assert connected is not None
        await asyncio.shield(connected)

    async def disconnect(self) -> None:
        """Leave: close with 1000, stop retrying, fail pending waits; safe to call twice.

        Only this call closes with 1000, which the orchestrator takes as a clean leave;
        a connection that ends any other way is closed with another code.

        Also removes the destroy subscription and the signal handlers; the agent may
        ``connect()`` again afterwards.
        """
        self._shutdown.remove()
        supervisor, self._supervisor_task = self._supervisor_task, None
        if supervisor is not None and not supervisor.done():
            supervisor.cancel()
            if supervisor is not asyncio.current_task():
                try:
                    await supervisor
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        if self._status is not AgentStatus.CLOSED:
            logger.info("disconnected name=%s", self._config.name)
        self._to_closed(ConnectionClosedError("disconnect() was called"))

    async def __aenter__(self) -> FleetAgent:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- drain, undrain, empty -------------------------------------------------------

    async def drain(self) -> None:
        """Report ``draining``; returns once a Poll echoes it.

        The status flips at once and no frame is sent: the next poll reply carries it.
        Raises :class:`ConnectionClosedError` when not connected (the status is still
        reported at the next connection) or when the connection goes away first.
        """
        await self._change_status("draining")

    async def undrain(self) -> None:
        """Report ``active`` again; returns once a Poll echoes it (see :meth:`drain`)."""
        await self._change_status("active")

    async def await_empty(self, timeout_ms: float | None = None) -> None:
        """Return once every room has 0 connections (re-checked every 200 ms).

        Raises :class:`AgentTimeoutError` (a ``TimeoutError``) when ``timeout_ms`` passes.
        """
        delay = None if timeout_ms is None else timeout_ms / 1000
        try:
            async with asyncio.timeout(delay):
                while True:
                    if all(view.connections == 0 for view in self._host.rooms()):
                        return
                    await asyncio.sleep(_EMPTY_RECHECK_S)
        except TimeoutError as exc:
            raise AgentTimeoutError(f"rooms still had connections after {timeout_ms:g} ms") from exc

    # -- graceful shutdown -----------------------------------------------------------

    def enable_graceful_shutdown(self, empty_timeout_ms: float | None = 60_000) -> None:
        """On SIGTERM/SIGINT: drain → ``await_empty(empty_timeout_ms)`` → disconnect →
        host ``shutdown()``.

        A second call replaces the handlers. The first signal removes them (so a second
        signal acts as by default); each failing step is logged and the sequence goes on.
        """
        self._shutdown.install(empty_timeout_ms)

    @property
    def _shutdown_task(self) -> asyncio.Task[None] | None:
        """The graceful shutdown a signal started, while it runs."""
        return self._shutdown.task

    # -- status ----------------------------------------------------------------------

    def _apply_status(self, target: SnapshotStatus) -> None:
        self._snapshot.status = target
        if self._status in LIVE:
            draining = target == "draining"
            self._status = AgentStatus.DRAINING if draining else AgentStatus.CONNECTED

    async def _change_status(self, target: SnapshotStatus) -> None:
        self._apply_status(target)
        if self._status not in LIVE:
            raise ConnectionClosedError(
                f"not connected: {target!r} is reported once the agent is connected"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _settle_waiters(self, echoed: str) -> None:
        for target, waiter in self._waiters:
            if target == echoed and not waiter.done():
                waiter.set_result(None)

    def _fail_waiters(self, reason: str) -> None:
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            _fail(waiter, ConnectionClosedError(reason))

    # -- destroy subscription --------------------------------------------------------

    def _attach_destroy_listener(self) -> None:
        if self._unsubscribe is None and isinstance(self._host, DestroyNotifier):
            self._unsubscribe = self._host.add_destroy_listener(self._on_room_destroyed)

    def _detach_destroy_listener(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def _on_room_destroyed(self, room: RoomView) -> None:
        self._snapshot.forget(room.id)

    # -- the supervisor --------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._status = AgentStatus.CONNECTING
        self._connected = loop.create_future()
        self._attach_destroy_listener()
        self._supervisor_task = loop.create_task(self._supervise(), name="fleet-agent")

    def _to_closed(self, reason: FleetAgentError) -> None:
        self._status = AgentStatus.CLOSED
        self._instance_id = None
        _fail(self._connected, reason)
        self._fail_waiters(str(reason))
        self._detach_destroy_listener()

    async def _supervise(self) -> None:
        outcome: FleetAgentError = ConnectionClosedError("disconnect() was called")
        try:
            outcome = await self._supervisor.run()
        finally:
            if self._supervisor_task is asyncio.current_task():
                self._to_closed(outcome)

    def _joined(self, hello: agent_pb2.Hello) -> None:
        self._instance_id = hello.instance_id
        self._snapshot.reset_seq(hello.features)
        draining = self._snapshot.status == "draining"
        self._status = AgentStatus.DRAINING if draining else AgentStatus.CONNECTED
        logger.info(
            "connected instance=%s heartbeat_ms=%d status=%s",
            hello.instance_id,
            hello.heartbeat_ms,
            self._status.value,
        )
        connected = self._connected
        if connected is not None and not connected.done():
            connected.set_result(None)

    def _lost(self, cause: str) -> None:
        self._status = AgentStatus.CONNECTING
        self._instance_id = None
        self._fail_waiters(f"connection lost: {cause}")
        if self._connected is None or self._connected.done():
            self._connected = asyncio.get_running_loop().create_future()
