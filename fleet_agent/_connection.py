"""One connection to the orchestrator: dial, wait for Hello, then pass frames along.

:func:`establish` is the single way in, for the first connection and every reconnect:
it dials one URL with the agent key as a subprotocol and returns once a Hello of the
agent's protocol major arrived. :func:`serve` then hands each data message to the frame
handler and sends its reply, until the socket closes or the orchestrator stops polling.

Close codes: the agent closes with 1000 only when ``disconnect()`` ends the connection
(a *clean leave* to the orchestrator). Every other end is not a leave: 4012 when no
poll came for three heartbeats, 1002 on a protocol mismatch, 1001 otherwise, and a
close from the orchestrator is answered with its own code (1001 for its 1000).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Final

from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._config import AgentConfig, leader_hint
from ._errors import ProtocolMismatchError, describe
from ._log import logger
from ._ws import PROTOCOL_ERROR, HandshakeFailed, HandshakeRefused, Socket, open_socket

__all__ = [
    "HANDSHAKE_TIMEOUT_S",
    "LEAVE",
    "NOT_LEADER",
    "NO_POLL",
    "AttemptFailed",
    "Ended",
    "HandleFrame",
    "Reply",
    "close",
    "establish",
    "handshake_timeout_s",
    "serve",
]

LEAVE: Final = 1000
"""The agent's close code for ``disconnect()`` only: the orchestrator reads it as a leave."""
GOING_AWAY: Final = 1001
"""The agent's close code when it gives up on a connection for any other reason."""
NO_POLL: Final = 4012  # 4011 is the orchestrator's "credential revoked"
"""The agent's close code when no poll came for :data:`POLL_MISSES` heartbeats."""
NOT_LEADER: Final = 4010
"""The orchestrator's close code when it stops leading (reason ``not leader``)."""
POLL_MISSES: Final = 3
"""Heartbeats without a poll after which the agent drops a connection."""

HANDSHAKE_TIMEOUT_S: Final = 10.0
"""Bound on the WebSocket handshake, and on the wait for Hello after it, until a Hello
has told the agent the heartbeat (see :func:`handshake_timeout_s`)."""
_MIN_WAIT_S: Final = 0.001
_LEADER_HEADER: Final = "fleet-leader"
_MAX_MESSAGE_BYTES: Final = 2 * wire.MAX_FRAME_BYTES
"""Above 4 MiB so that oversize frames reach the codec (logged) instead of a 1009 close."""

Reply = bytes | list[bytes] | None
"""What answers one received message: nothing, one message, or a reply in parts (a list
of messages, sent back to back)."""
HandleFrame = Callable[[bytes], Reply | Coroutine[Any, Any, Reply]]
"""Turns one received message into its reply, or into a coroutine making it when it
needs a host call."""


class AttemptFailed(Exception):
    """One connection ended (or never got to Hello); the supervisor dials again.

    ``leader`` is the agent URL a standby named in its ``Fleet-Leader`` header when it
    refused the upgrade with 503 ``NOT_LEADER``; ``None`` otherwise.
    """

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


@dataclass(frozen=True, slots=True)
class Ended:
    """Why a joined connection ended: ``close_code`` is the orchestrator's when it closed
    the socket, ``no_poll`` is set when the agent dropped a silent orchestrator."""

    cause: str
    close_code: int | None = None
    no_poll: bool = False


def handshake_timeout_s(heartbeat_ms: int | None) -> float:
    """How long one handshake (and then Hello) may take: :data:`HANDSHAKE_TIMEOUT_S`, or
    less once a Hello gave the heartbeat: an orchestrator that does not answer for
    :data:`POLL_MISSES` heartbeats is as silent as one that stops polling (a frozen
    process whose kernel still accepts connections)."""
    if heartbeat_ms is None or heartbeat_ms <= 0:
        return HANDSHAKE_TIMEOUT_S
    return min(HANDSHAKE_TIMEOUT_S, POLL_MISSES * heartbeat_ms / 1000)


async def establish(
    config: AgentConfig, url: str, timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> tuple[Socket, agent_pb2.Hello]:
    """Dial ``url`` and wait for Hello, each within ``timeout_s``; the caller closes the
    returned socket.

    Raises :class:`AttemptFailed` for anything worth another attempt, and
    :class:`ProtocolMismatchError` (after closing with 1002) when the orchestrator speaks
    another protocol major.
    """
    sock = await _dial(config, url, timeout_s)
    try:
        if sock.protocol != wire.SUBPROTOCOL:
            raise AttemptFailed(
                f"connect failed url={url}: the orchestrator did not select {wire.SUBPROTOCOL}"
            )
        hello = await _await_hello(sock, url, timeout_s)
    except BaseException as exc:
        await close(sock, _abandon_code(exc))
        raise
    return sock, hello


async def serve(
    sock: Socket,
    handle: HandleFrame,
    *,
    heartbeat_ms: int,
    polls: Callable[[], int],
) -> Ended:
    """Handle frames one at a time until the connection ends; returns why it ended.

    A frame the handler answers at once (a Poll) is answered in the callback that read
    it; one it answers with an awaitable (a host call) holds the frames after it until
    that reply went out. ``polls`` counts the polls handled so far. Once the agent has
    waited :data:`POLL_MISSES` heartbeats for a message without a poll among them, it
    stops (the caller closes with :data:`NO_POLL`); time spent on host calls does not
    count, a reply in N parts adds N heartbeats to the wait, and a ``heartbeat_ms`` of 0
    turns the check off. A host call in progress when the connection ends is let finish
    (its reply dropped); one in progress when ``serve`` is cancelled is cancelled.
    """
    serving = _Serving(sock, handle, heartbeat_ms, polls)
    try:
        ended = await serving.result
        if serving.task is not None:
            await asyncio.wait([serving.task])
        return ended
    except asyncio.CancelledError:
        if serving.task is not None:
            serving.task.cancel()
        raise
    finally:
        serving.stop()


class _Serving:
    """The state of :func:`serve`: the host call in progress, the frames held behind it,
    and the liveness check, one timer per connection moved only when it fires.

    ``_waited`` is the time spent waiting for messages since the last poll and ``_since``
    when the current wait began (``None`` during a host call). Once they add up to
    ``budget`` during a wait, :attr:`result` ends the connection.
    """

    def __init__(
        self, sock: Socket, handle: HandleFrame, heartbeat_ms: int, polls: Callable[[], int]
    ) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.result: asyncio.Future[Ended] = loop.create_future()
        self.task: asyncio.Task[None] | None = None
        self._sock = sock
        self._handle = handle
        self._polls = polls
        self._heartbeat_s = heartbeat_ms / 1000
        self._budget = POLL_MISSES * self._heartbeat_s
        self._backlog: deque[bytes] = deque()
        self._waited = 0.0
        self._since: float | None = loop.time()
        self._timer = loop.call_later(self._budget, self._check) if heartbeat_ms > 0 else None
        sock.ended.add_done_callback(self._on_end)
        sock.deliver(self._on_message)

    def _on_message(self, data: bytes) -> None:
        if self.result.done():
            return
        if self.task is not None:
            self._backlog.append(data)
            self._sock.hold(len(self._backlog))
            return
        self._run(data)

    def _run(self, data: bytes) -> None:
        since = self._since
        if since is not None:
            self._waited += self.loop.time() - since
        seen = self._polls()
        try:
            reply = self._handle(data)
        except Exception as exc:
            self._stop_with(exc)
            return
        if reply is None or type(reply) is bytes or type(reply) is list:
            self._sent(reply, seen)
            return
        assert not isinstance(reply, bytes | list)
        try:  # run the host call here until it first waits: most never do
            waiting_on = reply.send(None)
        except StopIteration as done:
            self._sent(done.value, seen)
            return
        except Exception as exc:
            self._stop_with(exc)
            return
        self._since = None
        self.task = self.loop.create_task(self._finish(_Resumed(reply, waiting_on), seen))

    async def _finish(self, pending: Awaitable[Reply], seen: int) -> None:
        try:
            reply = await pending
        except Exception as exc:
            self._stop_with(exc)
            return
        finally:
            self.task = None
        if self.result.done():
            return
        self._sent(reply, seen)
        backlog = self._backlog
        while backlog and self.task is None and not self.result.done():
            self._run(backlog.popleft())
        self._sock.hold(len(backlog))

    def _sent(self, reply: Reply, seen: int) -> None:
        """Send ``reply``; the wait for the next message begins."""
        if self._polls() != seen:
            self._waited = 0.0
        if reply is not None:
            frames = [reply] if isinstance(reply, bytes) else reply
            for frame in frames:
                if not self._sock.send(frame):
                    self._stop(Ended("send failed (the connection is closing)"))
                    return
            if len(frames) > 1:
                # The orchestrator reads a reply in parts before it polls again:
                # one more heartbeat of patience per part.
                self._waited -= len(frames) * self._heartbeat_s
        self._since = self.loop.time()

    def _check(self) -> None:
        now = self.loop.time()
        since = self._since
        left = self._budget - self._waited - (0.0 if since is None else now - since)
        if left <= 0 and since is not None:
            heartbeat_ms = round(self._heartbeat_s * 1000)
            cause = f"no poll for {POLL_MISSES} heartbeats of {heartbeat_ms} ms"
            self._stop(Ended(cause, no_poll=True))
            return
        self._timer = self.loop.call_at(now + max(left, _MIN_WAIT_S), self._check)

    def _on_end(self, _: object) -> None:
        code = self._sock.close_code
        self._stop(Ended(f"closed code={code}", close_code=code))

    def _stop(self, ended: Ended) -> None:
        if not self.result.done():
            self.result.set_result(ended)

    def _stop_with(self, exc: Exception) -> None:
        if not self.result.done():
            self.result.set_exception(exc)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._sock.ended.remove_done_callback(self._on_end)


class _Resumed:
    """A coroutine already started (by ``send(None)``) and waiting on ``waiting_on``,
    awaitable again: a task awaiting it waits on that same future, then drives the rest
    of the coroutine as if it had run it from the start (results, errors, cancellation)."""

    def __init__(self, coro: Coroutine[Any, Any, Reply], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Reply]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation or the future's error: passed on
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as done:
                    result: Reply = done.value
                    return result
                continue
            try:
                waiting_on = coro.send(sent)
            except StopIteration as done:
                result = done.value
                return result


async def close(sock: Socket, code: int, reason: str = "") -> None:
    """Close ``sock`` with ``code`` unless it is closed already: the close frame, then the
    connection at once (the agent ends the TCP connection first, so the orchestrator's
    port keeps no TIME_WAIT of it)."""
    await sock.close(code, reason)


async def _dial(config: AgentConfig, url: str, timeout_s: float) -> Socket:
    try:
        async with asyncio.timeout(timeout_s):
            return await open_socket(
                url, (wire.SUBPROTOCOL, config.key), _MAX_MESSAGE_BYTES, _answer
            )
    except HandshakeRefused as exc:
        leader = None
        if exc.status == 503:
            leader = leader_hint(exc.headers.get(_LEADER_HEADER), config.key)
        raise AttemptFailed(_refusal(url, exc.status, leader), leader) from exc
    except (HandshakeFailed, OSError, TimeoutError) as exc:
        raise AttemptFailed(f"connect failed url={url}: {describe(exc)}") from exc


async def _await_hello(sock: Socket, url: str, timeout_s: float) -> agent_pb2.Hello:
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                data = await sock.receive()
                if data is None:
                    raise AttemptFailed(
                        f"connection closed before Hello url={url} code={sock.close_code}"
                    )
                try:
                    frame = wire.decode_frame(data)
                except wire.ProtocolVersionError as exc:
                    raise _mismatch(exc.major) from exc
                except wire.WireError as exc:
                    logger.warning("ignored a frame before Hello: cannot decode it (%s)", exc)
                    continue
                body = frame.WhichOneof("body")
                if body != "hello":
                    logger.warning("ignored a %s frame before Hello", body or "empty")
                    continue
                if frame.hello.protocol_version != wire.PROTOCOL_MAJOR:
                    raise _mismatch(frame.hello.protocol_version)
                return frame.hello
    except TimeoutError as exc:
        raise AttemptFailed(f"no Hello within {timeout_s:g} s url={url}") from exc


def _abandon_code(exc: BaseException) -> int:
    """The close code when the agent abandons a connection before Hello because of ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return LEAVE  # disconnect() or the connect_timeout_ms expiry: the agent leaves
    if isinstance(exc, ProtocolMismatchError):
        return PROTOCOL_ERROR
    return GOING_AWAY


def _answer(code: int) -> int:
    """The code that answers the orchestrator's close: its own, but never 1000 (which
    would read as the agent's leave) nor a code no endpoint may send."""
    if 1001 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return GOING_AWAY


def _mismatch(remote: int) -> ProtocolMismatchError:
    exc = ProtocolMismatchError(remote, wire.PROTOCOL_MAJOR)
    logger.error(
        "%s; giving up (upgrade the agent or the orchestrator so both speak one major)", exc
    )
    return exc


def _refusal(url: str, status: int, leader: str | None) -> str:
    hint = {401: " (check the agent key)", 429: " (throttled after failed handshakes)"}
    if leader is not None:
        return f"handshake refused url={url} status={status} (a standby) leader={leader}"
    return f"handshake refused url={url} status={status}{hint.get(status, '')}"
