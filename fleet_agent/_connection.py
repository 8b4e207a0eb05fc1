"""One connection to the orchestrator: dial, wait for Hello, then pass frames along.

:func:`establish` is the single way in, for the first connection and every reconnect:
it dials with the agent key as a subprotocol and returns once a Hello of the agent's
protocol major arrived. :func:`serve` then hands each data message to the frame
handler and sends its reply, until the socket closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp
from rivalis.fleet.v3 import agent_pb2

from . import wire
from ._config import AgentConfig
from ._errors import ProtocolMismatchError, describe
from ._log import logger

__all__ = ["AttemptFailed", "HandleFrame", "establish", "serve"]

_HANDSHAKE_TIMEOUT_S: Final = 10.0
"""Bound on the WebSocket handshake, and on the wait for Hello after it."""
_CLOSE_TIMEOUT_S: Final = 5.0
_MAX_MESSAGE_BYTES: Final = 2 * wire.MAX_FRAME_BYTES
"""Above 4 MiB so that oversize frames reach the codec (logged) instead of a 1009 close."""

HandleFrame = Callable[[bytes], Awaitable[bytes | None]]
"""Turns one received message into the reply to send, if any."""


class AttemptFailed(Exception):
    """One connection ended (or never got to Hello); the supervisor dials again."""


async def establish(
    http: aiohttp.ClientSession, config: AgentConfig
) -> tuple[aiohttp.ClientWebSocketResponse, agent_pb2.Hello]:
    """Dial ``config.url`` and wait for Hello; the caller closes the returned socket.

    Raises :class:`AttemptFailed` for anything worth another attempt, and
    :class:`ProtocolMismatchError` (after closing with 1002) when the orchestrator speaks
    another protocol major.
    """
    ws = await _dial(http, config)
    try:
        if ws.protocol != wire.SUBPROTOCOL:
            raise AttemptFailed(
                f"connect failed url={config.url}: "
                f"the orchestrator did not select {wire.SUBPROTOCOL}"
            )
        hello = await _await_hello(ws, config.url)
    except BaseException as exc:
        mismatch = isinstance(exc, ProtocolMismatchError)
        code = aiohttp.WSCloseCode.PROTOCOL_ERROR if mismatch else aiohttp.WSCloseCode.OK
        await ws.close(code=code)
        raise
    return ws, hello


async def serve(ws: aiohttp.ClientWebSocketResponse, handle: HandleFrame) -> str:
    """Handle frames one at a time until the connection ends; returns why it ended."""
    while True:
        data = await _receive(ws)
        if data is None:
            return f"closed code={ws.close_code}"
        reply = await handle(data)
        if reply is None:
            continue
        try:
            await ws.send_bytes(reply)
        except (ConnectionError, aiohttp.ClientError) as exc:
            return f"send failed ({describe(exc)})"


async def _dial(
    http: aiohttp.ClientSession, config: AgentConfig
) -> aiohttp.ClientWebSocketResponse:
    try:
        async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
            return await http.ws_connect(
                config.url,
                protocols=(wire.SUBPROTOCOL, config.key),
                max_msg_size=_MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
            )
    except aiohttp.WSServerHandshakeError as exc:
        raise AttemptFailed(_refusal(config.url, exc.status)) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise AttemptFailed(f"connect failed url={config.url}: {describe(exc)}") from exc


async def _await_hello(ws: aiohttp.ClientWebSocketResponse, url: str) -> agent_pb2.Hello:
    try:
        async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
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
        raise AttemptFailed(f"no Hello within {_HANDSHAKE_TIMEOUT_S:g} s url={url}") from exc


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
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return None


def _refusal(url: str, status: int) -> str:
    hint = {401: " (check the agent key)", 429: " (throttled after failed handshakes)"}
    return f"handshake refused url={url} status={status}{hint.get(status, '')}"
