"""FleetAgent: keeps one game server joined to the orchestrator.

One supervisor task owns the connection. It dials with jittered backoff until a Hello
arrives, then reads frames strictly in order: a Poll is answered with the snapshot, a
Command with an Ack after its host call finished. A drop sends it back to dialling (new
instance id, same process uid); ``disconnect()``, a ``connect_timeout_ms`` expiry or a
protocol mismatch end it. Network failures are logged on ``fleet.agent`` and never raise
into the host; only the calls that wait on the network raise, with the types of
:mod:`fleet_agent._errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import math
import secrets
import signal
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final

import aiohttp
from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._backoff import reconnect_delay
from ._config import AgentConfig, make_config
from ._errors import (
    AgentTimeoutError,
    ConnectionClosedError,
    FleetAgentError,
    ProtocolMismatchError,
    RoomExistsError,
)
from ._host import DestroyNotifier, RoomHost, RoomView, SupportsShutdown
from ._log import logger
from ._options import Backoff, Capacity
from ._snapshot import Identity, Snapshot, SnapshotStatus
from ._status import AgentStatus

__all__ = ["FleetAgent"]

_HANDSHAKE_TIMEOUT_S: Final = 10.0
"""Bound on the WebSocket handshake, and on the wait for Hello after it."""
_CLOSE_TIMEOUT_S: Final = 5.0
_MAX_MESSAGE_BYTES: Final = 2 * wire.MAX_FRAME_BYTES
"""Above 4 MiB so that oversize frames reach the codec (logged) instead of a 1009 close."""
_EMPTY_RECHECK_S: Final = 0.2
_SNAPSHOT_WARNING_BYTES: Final = wire.MAX_FRAME_BYTES // 2
_SNAPSHOT_ERROR_BYTES: Final = math.ceil(wire.MAX_FRAME_BYTES * 0.9)
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_LIVE: Final = frozenset({AgentStatus.CONNECTED, AgentStatus.DRAINING})
_DEFAULT_BACKOFF: Final = Backoff()


def _agent_version() -> str:
    try:
        return importlib.metadata.version("rivalis-fleet")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _fail(future: asyncio.Future[None] | None, exc: BaseException) -> None:
    """Fail ``future`` without an "exception never retrieved" report if nobody awaits it."""
    if future is not None and not future.done():
        future.set_exception(exc)
        future.exception()


def _ack(cmd: agent_pb2.Command, *, ok: bool, error: str | None = None) -> agent_pb2.Ack:
    return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=ok, error=error)


class _AttemptFailed(Exception):
    """One connection ended (or never got to Hello); the retry loop dials again."""


class FleetAgent:
    """Joins a :class:`~fleet_agent.RoomHost` to the orchestrator at ``url``.

    ``connect()`` resolves on the first Hello and the agent then stays joined, redialling
    after every drop, until ``disconnect()``. Use it as an async context manager to pair
    the two.
    """

    def __init__(
        self,
        host: RoomHost,
        *,
        url: str,
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
        self._snapshot = Snapshot(
            Identity(
                name=self._config.name,
                process_uid=self._process_uid,
                agent_version=_agent_version(),
                endpoint_url=self._config.endpoint_url,
                labels=self._config.labels,
                capacity=self._config.capacity,
                auto_create=self._config.auto_create,
            )
        )
        self._status = AgentStatus.CLOSED
        self._instance_id: str | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] | None = None
        self._connect_deadline: asyncio.Timeout | None = None
        self._attempt = 1
        self._waiters: list[tuple[SnapshotStatus, asyncio.Future[None]]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

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
        if self._status in _LIVE:
            return
        if self._status is AgentStatus.CLOSED:
            previous = self._supervisor
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if self._status is AgentStatus.CLOSED:
                self._start()
        connected = self._connected
        assert connected is not None
        await asyncio.shield(connected)

    async def disconnect(self) -> None:
        """Leave: close with 1000, stop retrying, fail pending waits; safe to call twice.

        Also removes the destroy subscription and the signal handlers; the agent may
        ``connect()`` again afterwards.
        """
        self._remove_signal_handlers()
        supervisor, self._supervisor = self._supervisor, None
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
        if empty_timeout_ms is not None and not empty_timeout_ms > 0:
            raise ValueError("empty_timeout_ms must be a positive number or None")
        loop = asyncio.get_running_loop()
        self._remove_signal_handlers()
        self._signal_loop = loop
        try:
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig, empty_timeout_ms)
        except BaseException:
            self._remove_signal_handlers()
            raise

    def _remove_signal_handlers(self) -> None:
        loop, self._signal_loop = self._signal_loop, None
        if loop is None or loop.is_closed():
            return
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int, empty_timeout_ms: float | None) -> None:
        loop = self._signal_loop
        self._remove_signal_handlers()
        if loop is None or self._shutdown_task is not None:
            return
        logger.info("received %s: graceful shutdown", signal.Signals(sig).name)
        task = loop.create_task(self._graceful_shutdown(empty_timeout_ms))
        self._shutdown_task = task
        task.add_done_callback(self._graceful_shutdown_done)

    def _graceful_shutdown_done(self, task: asyncio.Task[None]) -> None:
        self._shutdown_task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("graceful shutdown failed", exc_info=exc)

    async def _graceful_shutdown(self, empty_timeout_ms: float | None) -> None:
        delay = None if empty_timeout_ms is None else empty_timeout_ms / 1000
        if self._status in _LIVE:
            try:
                async with asyncio.timeout(delay):
                    await self.drain()
            except Exception as exc:
                logger.warning("graceful shutdown: drain not confirmed (%s)", _describe(exc))
        else:
            self._apply_status("draining")
        try:
            await self.await_empty(empty_timeout_ms)
        except Exception as exc:
            logger.warning("graceful shutdown: %s", _describe(exc))
        try:
            await self.disconnect()
        except Exception:
            logger.exception("graceful shutdown: disconnect failed")
        if isinstance(self._host, SupportsShutdown):
            try:
                result = self._host.shutdown()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("graceful shutdown: host shutdown() failed")
        logger.info("graceful shutdown complete")

    # -- status ----------------------------------------------------------------------

    def _apply_status(self, target: SnapshotStatus) -> None:
        self._snapshot.status = target
        if self._status in _LIVE:
            draining = target == "draining"
            self._status = AgentStatus.DRAINING if draining else AgentStatus.CONNECTED

    async def _change_status(self, target: SnapshotStatus) -> None:
        self._apply_status(target)
        if self._status not in _LIVE:
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
        self._supervisor = loop.create_task(self._supervise(), name="fleet-agent")

    def _to_closed(self, reason: FleetAgentError) -> None:
        self._status = AgentStatus.CLOSED
        self._instance_id = None
        self._connect_deadline = None
        _fail(self._connected, reason)
        self._fail_waiters(str(reason))
        self._detach_destroy_listener()

    async def _supervise(self) -> None:
        config = self._config
        outcome: FleetAgentError = ConnectionClosedError("disconnect() was called")
        timeout_s = None if config.connect_timeout_ms is None else config.connect_timeout_ms / 1000
        logger.info("connecting url=%s name=%s", config.url, config.name)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http,
                asyncio.timeout(timeout_s) as deadline,
            ):
                self._connect_deadline = deadline
                await self._redial(http)
        except TimeoutError as exc:
            if config.connect_timeout_ms is None:
                logger.exception("agent connection loop failed")
                outcome = FleetAgentError(f"agent connection loop failed: {_describe(exc)}")
                return
            outcome = AgentTimeoutError(
                f"no Hello within connect_timeout_ms={config.connect_timeout_ms:g}"
            )
            logger.warning("giving up: %s", outcome)
        except ProtocolMismatchError as exc:
            outcome = exc
        except Exception as exc:
            logger.exception("agent connection loop failed")
            outcome = FleetAgentError(f"agent connection loop failed: {_describe(exc)}")
        finally:
            if self._supervisor is asyncio.current_task():
                self._to_closed(outcome)

    async def _redial(self, http: aiohttp.ClientSession) -> None:
        """Connect again after every failed or lost connection, waiting a little longer
        after each failure in a row; the count restarts at every Hello."""
        self._attempt = 1
        while True:
            try:
                await self._connection(http)
            except _AttemptFailed as exc:
                wait_s = reconnect_delay(self._attempt, self._config.backoff)
                logger.warning("%s; retrying in %d ms", exc, round(wait_s * 1000))
                await asyncio.sleep(wait_s)
                self._attempt += 1

    async def _connection(self, http: aiohttp.ClientSession) -> None:
        """Dial, wait for Hello, then serve frames until the connection ends (always raises)."""
        config = self._config
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                ws = await http.ws_connect(
                    config.url,
                    protocols=(wire.SUBPROTOCOL, config.key),
                    max_msg_size=_MAX_MESSAGE_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise _AttemptFailed(_refusal(config.url, exc.status)) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _AttemptFailed(f"connect failed url={config.url}: {_describe(exc)}") from exc
        close_code: int = aiohttp.WSCloseCode.OK
        try:
            if ws.protocol != wire.SUBPROTOCOL:
                raise _AttemptFailed(
                    f"connect failed url={config.url}: "
                    f"the orchestrator did not select {wire.SUBPROTOCOL}"
                )
            try:
                hello = await self._await_hello(ws)
            except ProtocolMismatchError:
                close_code = aiohttp.WSCloseCode.PROTOCOL_ERROR
                raise
            self._joined(hello)
            cause = await self._serve(ws)
            self._lost(cause)
            raise _AttemptFailed(f"connection lost instance={hello.instance_id}: {cause}")
        finally:
            await ws.close(code=close_code)

    async def _await_hello(self, ws: aiohttp.ClientWebSocketResponse) -> agent_pb2.Hello:
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                while True:
                    data = await _receive(ws)
                    if data is None:
                        raise _AttemptFailed(
                            f"connection closed before Hello url={self._config.url} "
                            f"code={ws.close_code}"
                        )
                    try:
                        frame = wire.decode_frame(data)
                    except wire.ProtocolVersionError as exc:
                        raise self._mismatch(exc.major) from exc
                    except wire.WireError as exc:
                        logger.warning("ignored a frame before Hello: cannot decode it (%s)", exc)
                        continue
                    body = frame.WhichOneof("body")
                    if body != "hello":
                        logger.warning("ignored a %s frame before Hello", body or "empty")
                        continue
                    if frame.hello.protocol_version != wire.PROTOCOL_MAJOR:
                        raise self._mismatch(frame.hello.protocol_version)
                    return frame.hello
        except TimeoutError as exc:
            raise _AttemptFailed(
                f"no Hello within {_HANDSHAKE_TIMEOUT_S:g} s url={self._config.url}"
            ) from exc

    def _mismatch(self, remote: int) -> ProtocolMismatchError:
        exc = ProtocolMismatchError(remote, wire.PROTOCOL_MAJOR)
        logger.error(
            "%s; giving up (upgrade the agent or the orchestrator so both speak one major)", exc
        )
        return exc

    def _joined(self, hello: agent_pb2.Hello) -> None:
        self._attempt = 1  # the backoff restarts at every Hello
        if self._connect_deadline is not None:
            self._connect_deadline.reschedule(None)
        self._instance_id = hello.instance_id
        self._snapshot.reset_seq()
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

    # -- frames ----------------------------------------------------------------------

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Handle frames one at a time until the connection ends; returns why it ended."""
        while True:
            data = await _receive(ws)
            if data is None:
                return f"closed code={ws.close_code}"
            reply = await self._handle(data)
            if reply is None:
                continue
            try:
                await ws.send_bytes(reply)
            except (ConnectionError, aiohttp.ClientError) as exc:
                return f"send failed ({_describe(exc)})"

    async def _handle(self, data: bytes) -> bytes | None:
        try:
            frame = wire.decode_frame(data)
        except wire.ProtocolVersionError as exc:
            logger.warning(
                "dropped a frame: protocol version mismatch (major %d, expected %d)",
                exc.major,
                wire.PROTOCOL_MAJOR,
            )
            return None
        except wire.WireError as exc:
            logger.warning("dropped a frame: cannot decode it (%s)", exc)
            return None
        body = frame.WhichOneof("body")
        if body == "poll":
            return self._on_poll(frame.poll)
        if body == "cmd":
            ack = await self._on_command(frame.cmd)
            return wire.encode_frame(agent_pb2.Frame(ack=ack))
        logger.warning("dropped a %s frame: not one an agent accepts", body or "empty")
        return None

    def _on_poll(self, poll: agent_pb2.Poll) -> bytes | None:
        self._settle_waiters(poll.status)
        known_hash = poll.known_hash if poll.HasField("known_hash") else None
        try:
            state = self._snapshot.reply(self._host, poll.req_id, known_hash)
        except Exception:
            logger.exception("cannot build the snapshot; poll left unanswered")
            return None
        data = wire.encode_frame(agent_pb2.Frame(state=state))
        if state.full:
            _check_snapshot_size(len(data))
        return data

    async def _on_command(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        op = cmd.op
        if op == "create":
            return await self._create(cmd)
        if op == "destroy":
            return await self._destroy(cmd)
        if op in ("drain", "undrain"):
            self._apply_status("draining" if op == "drain" else "active")
            return _ack(cmd, ok=True)
        return _ack(cmd, ok=False, error=f"unknown command op {op!r}")

    async def _create(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        config = self._config
        if not config.auto_create:
            return _ack(cmd, ok=False, error="auto_create is disabled on this instance")
        if not cmd.room_type:
            return _ack(cmd, ok=False, error="create needs a room_type")
        room_id = cmd.room_id or None
        try:
            rooms = list(self._host.rooms())
            max_rooms = config.capacity.max_rooms
            if max_rooms is not None and len(rooms) >= max_rooms:
                return _ack(cmd, ok=False, error=f"capacity reached: max_rooms={max_rooms}")
            if room_id is not None and any(view.id == room_id for view in rooms):
                raise RoomExistsError(room_id)
            view = await self._host.create_room(cmd.room_type, room_id)
            created = agent_pb2.AckRoom(id=view.id, type=view.type)
        except RoomExistsError as exc:
            return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, exists=True, error=str(exc))
        except Exception as exc:
            logger.warning("create command failed type=%s: %s", cmd.room_type, _describe(exc))
            return _ack(cmd, ok=False, error=_describe(exc))
        self._snapshot.mark_fleet(created.id)
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True, room=created)

    async def _destroy(self, cmd: agent_pb2.Command) -> agent_pb2.Ack:
        room_id = cmd.room_id
        if not room_id:
            return _ack(cmd, ok=False, error="destroy needs a room_id")
        try:
            present = any(view.id == room_id for view in self._host.rooms())
            destroyed = present and await self._host.destroy_room(room_id)
        except Exception as exc:
            logger.warning("destroy command failed room=%s: %s", room_id, _describe(exc))
            return _ack(cmd, ok=False, error=_describe(exc))
        self._snapshot.forget(room_id)
        return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True, already_gone=not destroyed)


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> bytes | None:
    """The next data message as bytes (text as UTF-8); ``None`` once the socket closes."""
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is aiohttp.WSMsgType.TEXT:
            text: str = msg.data
            return text.encode()
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return None


def _check_snapshot_size(size: int) -> None:
    share = 100 * size / wire.MAX_FRAME_BYTES
    if size >= _SNAPSHOT_ERROR_BYTES:
        logger.error(
            "snapshot is %d bytes (%.0f%% of the %d-byte frame limit): past the limit the "
            "orchestrator kicks the agent and it falls into a reconnect loop; "
            "host fewer rooms per instance or run more instances",
            size,
            share,
            wire.MAX_FRAME_BYTES,
        )
    elif size >= _SNAPSHOT_WARNING_BYTES:
        logger.warning(
            "snapshot is %d bytes (%.0f%% of the %d-byte frame limit); "
            "consider fewer rooms per instance or more instances",
            size,
            share,
            wire.MAX_FRAME_BYTES,
        )


def _refusal(url: str, status: int) -> str:
    hint = {401: " (check the agent key)", 429: " (throttled after failed handshakes)"}
    return f"handshake refused url={url} status={status}{hint.get(status, '')}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
