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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._config import AgentConfig, leader_hint
from ._errors import ProtocolMismatchError, describe
from ._log import logger

__all__ = [
    "HANDSHAKE_TIMEOUT_S",
    "LEAVE",
    "NOT_LEADER",
    "NO_POLL",
    "AttemptFailed",
    "Ended",
    "HandleFrame",
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
_CLOSE_TIMEOUT_S: Final = 5.0
_MIN_WAIT_S: Final = 0.001
_LEADER_HEADER: Final = "Fleet-Leader"
_MAX_MESSAGE_BYTES: Final = 2 * wire.MAX_FRAME_BYTES
"""Above 4 MiB so that oversize frames reach the codec (logged) instead of a 1009 close."""

HandleFrame = Callable[[bytes], Awaitable[bytes | list[bytes] | None]]
"""Turns one received message into the reply to send, if any (a reply in parts is a
list of messages, sent back to back)."""


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
    http: aiohttp.ClientSession,
    config: AgentConfig,
    url: str,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> tuple[aiohttp.ClientWebSocketResponse, agent_pb2.Hello]:
    """Dial ``url`` and wait for Hello, each within ``timeout_s``; the caller closes the
    returned socket.

    Raises :class:`AttemptFailed` for anything worth another attempt, and
    :class:`ProtocolMismatchError` (after closing with 1002) when the orchestrator speaks
    another protocol major.
    """
    ws = await _dial(http, config, url, timeout_s)
    try:
        if ws.protocol != wire.SUBPROTOCOL:
            raise AttemptFailed(
                f"connect failed url={url}: the orchestrator did not select {wire.SUBPROTOCOL}"
            )
        hello = await _await_hello(ws, url, timeout_s)
    except BaseException as exc:
        await close(ws, _abandon_code(exc))
        raise
    return ws, hello


async def serve(
    ws: aiohttp.ClientWebSocketResponse,
    handle: HandleFrame,
    *,
    heartbeat_ms: int,
    polls: Callable[[], int],
) -> Ended:
    """Handle frames one at a time until the connection ends; returns why it ended.

    ``polls`` counts the polls handled so far. Once the agent has waited
    :data:`POLL_MISSES` heartbeats for a message without a poll among them, it stops
    (the caller closes with :data:`NO_POLL`); time spent handling frames does not count,
    a reply in N parts adds N heartbeats to the wait, and a ``heartbeat_ms`` of 0 turns the
    check off.
    """
    watch = _PollWatch(POLL_MISSES * heartbeat_ms / 1000) if heartbeat_ms > 0 else None
    since = 0.0
    try:
        while True:
            if watch is not None:
                watch.since = since = watch.loop.time()
            try:
                data = await _receive(ws)
            except asyncio.CancelledError:
                if watch is not None and watch.expired():
                    return Ended(
                        f"no poll for {POLL_MISSES} heartbeats of {heartbeat_ms} ms", no_poll=True
                    )
                raise
            if watch is not None:
                watch.waited += watch.loop.time() - since
                watch.since = None
            if data is None:
                return Ended(f"closed code={ws.close_code}", close_code=ws.close_code)
            seen = polls()
            reply = await handle(data)
            if watch is not None and polls() != seen:
                watch.waited = 0.0
            if reply is None:
                continue
            try:
                if isinstance(reply, bytes):
                    await ws.send_bytes(reply)
                else:
                    for part in reply:
                        await ws.send_bytes(part)
                    if watch is not None and len(reply) > 1:
                        # The orchestrator reads a reply in parts before it polls again:
                        # one more heartbeat of patience per part.
                        watch.waited -= len(reply) * heartbeat_ms / 1000
            except (ConnectionError, aiohttp.ClientError) as exc:
                return Ended(f"send failed ({describe(exc)})")
    finally:
        if watch is not None:
            watch.stop()


class _PollWatch:
    """The liveness check of :func:`serve`: one timer per connection, moved only when it
    fires, rather than a timeout armed and cancelled around every received message.

    :attr:`waited` is the time spent waiting for messages since the last poll and
    :attr:`since` when the current wait began (``None`` while a frame is handled). Once
    they add up to ``budget`` during a wait, the timer cancels the task, and
    :meth:`expired` tells that cancellation from any other.
    """

    def __init__(self, budget: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._budget = budget
        self._fired = False
        self.waited = 0.0
        self.since: float | None = None
        self._timer = self.loop.call_later(budget, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        left = self._budget - self.waited - (0.0 if since is None else now - since)
        if left <= 0 and since is not None:
            self._fired = True
            self._task.cancel()
            return
        self._timer = self.loop.call_at(now + max(left, _MIN_WAIT_S), self._check)

    def expired(self) -> bool:
        """Whether the cancellation being raised is this check's alone (it is then
        consumed, as ``asyncio.timeout`` does)."""
        if not self._fired:
            return False
        self._fired = False
        return self._task.uncancel() <= self._cancelling

    def stop(self) -> None:
        self._timer.cancel()


async def close(ws: aiohttp.ClientWebSocketResponse, code: int, reason: str = "") -> None:
    """Close ``ws`` with ``code`` unless it is closed already; a network error is only
    logged (debug). aiohttp waits up to 5 s for the answer, unless a cancelled receive
    already marked the socket cut."""
    if ws.closed:
        return
    try:
        await ws.close(code=code, message=reason.encode())
    except (ConnectionError, aiohttp.ClientError) as exc:
        logger.debug("close failed: %s", describe(exc))


async def _dial(
    http: aiohttp.ClientSession, config: AgentConfig, url: str, timeout_s: float
) -> aiohttp.ClientWebSocketResponse:
    try:
        async with asyncio.timeout(timeout_s):
            return await http.ws_connect(
                url,
                protocols=(wire.SUBPROTOCOL, config.key),
                max_msg_size=_MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
                autoclose=False,  # _receive answers a close itself, never with 1000
            )
    except aiohttp.WSServerHandshakeError as exc:
        leader = None
        if exc.status == 503 and exc.headers is not None:
            leader = leader_hint(exc.headers.get(_LEADER_HEADER), config.key)
        raise AttemptFailed(_refusal(url, exc.status, leader), leader) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise AttemptFailed(f"connect failed url={url}: {describe(exc)}") from exc


async def _await_hello(
    ws: aiohttp.ClientWebSocketResponse, url: str, timeout_s: float
) -> agent_pb2.Hello:
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                data = await _receive(ws)
                if data is None:
                    raise AttemptFailed(
                        f"connection closed before Hello url={url} code={ws.close_code}"
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
        return aiohttp.WSCloseCode.PROTOCOL_ERROR
    return GOING_AWAY


def _answer(code: object) -> int:
    """The code that answers the orchestrator's close: its own, but never 1000 (which
    would read as the agent's leave) nor a code no endpoint may send."""
    if isinstance(code, int) and (1001 <= code <= 1003 or 1007 <= code <= 1014):
        return code
    if isinstance(code, int) and 3000 <= code <= 4999:
        return code
    return GOING_AWAY


def _mismatch(remote: int) -> ProtocolMismatchError:
    exc = ProtocolMismatchError(remote, wire.PROTOCOL_MAJOR)
    logger.error(
        "%s; giving up (upgrade the agent or the orchestrator so both speak one major)", exc
    )
    return exc


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
        if msg.type is aiohttp.WSMsgType.CLOSE:
            await close(ws, _answer(msg.data))
            return None
        if msg.type in (
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return None


def _refusal(url: str, status: int, leader: str | None) -> str:
    hint = {401: " (check the agent key)", 429: " (throttled after failed handshakes)"}
    if leader is not None:
        return f"handshake refused url={url} status={status} (a standby) leader={leader}"
    return f"handshake refused url={url} status={status}{hint.get(status, '')}"
