"""The agent's WebSocket client (RFC 6455), on a bare asyncio protocol.

It does what one agent connection needs: the HTTP upgrade offering subprotocols (over
TLS for ``wss://`` and ``https://``), binary and text messages in, binary messages out,
ping → pong, the close handshake. A message is handed to the agent in the callback that
read it (:meth:`Socket.deliver`), so a Poll is answered without waking a task; before
that (the wait for Hello) messages queue for :meth:`Socket.receive`.

Client frames are masked (:mod:`fleet_agent._ws_frames`).
Incoming messages above ``max_message`` bytes, masked server frames and fragmented
control frames end the connection with 1009 or 1002. A refused upgrade raises
:class:`HandshakeRefused` with its status and headers (a standby's ``Fleet-Leader``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final, cast
from urllib.parse import urlsplit

from ._ws_frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, client_frame

__all__ = [
    "ABNORMAL",
    "PROTOCOL_ERROR",
    "HandshakeFailed",
    "HandshakeRefused",
    "Socket",
    "open_socket",
]

ABNORMAL: Final = 1006
"""The close code of a connection that ended without a close frame."""
PROTOCOL_ERROR: Final = 1002
MESSAGE_TOO_BIG: Final = 1009
_NO_STATUS: Final = 1005
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD: Final = 16 * 1024
_SECURE: Final = frozenset({"wss", "https"})
_MAX_BACKLOG: Final = 64
_READ_BYTES: Final = 64 * 1024
"""The socket is read into one buffer of this size, kept for the connection: a plain
``recv`` would allocate (and the allocator map and unmap) 256 KiB for every message."""
"""Messages queued before the socket stops reading (the agent is busy with a command)."""


class HandshakeRefused(Exception):
    """The server answered the upgrade with ``status`` (not 101); ``headers`` by
    lower-cased name."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"status={status}")
        self.status = status
        self.headers = headers


class HandshakeFailed(Exception):
    """The server's 101 answer was not a valid WebSocket upgrade."""


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeFailed("the answer to the upgrade is not HTTP")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Socket(asyncio.BufferedProtocol):
    """One client connection; made by :func:`open_socket`.

    :attr:`protocol` is the subprotocol the server selected, :attr:`close_code` the
    server's close code (:data:`ABNORMAL` when the connection ended without one, or the
    code this side closed with after a protocol error), ``None`` while open.
    """

    def __init__(
        self, request: bytes, accept: str, max_message: int, answer: Callable[[int], int]
    ) -> None:
        self._request = request
        self._answer = answer
        self._accept = accept
        self._max = max_message
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        self._read_view = memoryview(bytearray(_READ_BYTES))
        self._head = bytearray()
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._inbox: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._deliver: Callable[[bytes], None] | None = None
        self._paused = 0  # why reading is paused: 1 by the agent, 2 by write pressure
        self.protocol: str | None = None
        self.close_code: int | None = None
        self._sent_close = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        if not self._opened.done():
            self._opened.set_exception(ConnectionError("connection closed during the upgrade"))
        self._end()

    def pause_writing(self) -> None:
        self._pause(2)

    def resume_writing(self) -> None:
        self._resume(2)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if not self._opened.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._fail_open(HandshakeFailed("the upgrade answer's head is too long"))
                return
            rest = bytes(self._head[end + 4 :])
            if not self._upgrade(bytes(self._head[: end + 4])) or not rest:
                return
            data = rest
        if self._buf:
            self._buf += data
            self._frames(self._buf)
        else:
            self._frames(data)

    # -- the upgrade -----------------------------------------------------------------

    def _upgrade(self, head: bytes) -> bool:
        try:
            status, headers = _parse_head(head)
        except HandshakeFailed as exc:
            self._fail_open(exc)
            return False
        if status != 101:
            self._fail_open(HandshakeRefused(status, headers))
            return False
        if (
            headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-accept") != self._accept
        ):
            self._fail_open(HandshakeFailed("the server's 101 is not a valid WebSocket upgrade"))
            return False
        if "sec-websocket-extensions" in headers:
            self._fail_open(HandshakeFailed("the server chose an extension none was offered"))
            return False
        self.protocol = headers.get("sec-websocket-protocol") or None
        self._head = bytearray()
        self._opened.set_result(None)
        return True

    def _fail_open(self, exc: Exception) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    # -- frames in -------------------------------------------------------------------

    def _frames(self, data: bytes | bytearray) -> None:
        """Parse every complete frame of ``data``; keep the rest in the buffer."""
        at, size = 0, len(data)
        while size - at >= 2 and self.close_code is None:
            b0, b1 = data[at], data[at + 1]
            length, start = b1 & 0x7F, at + 2
            if length == 126:
                if size - at < 4:
                    break
                length, start = int.from_bytes(data[at + 2 : at + 4], "big"), at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length, start = int.from_bytes(data[at + 2 : at + 10], "big"), at + 10
            if b1 & 0x80 or b0 & 0x70:
                self._violation(PROTOCOL_ERROR, "a masked or extended frame from the server")
                return
            if length > self._max:
                self._violation(MESSAGE_TOO_BIG, "a message over the size limit")
                return
            end = start + length
            if end > size:
                break
            self._frame(b0, bytes(data[start:end]))
            at = end
        if data is self._buf:
            del self._buf[:at]
        elif at < size:
            self._buf += data[at:]

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode, final = b0 & 0x0F, b0 & 0x80
        if opcode >= OP_CLOSE:
            if not final or len(payload) > 125:
                self._violation(PROTOCOL_ERROR, "a fragmented or long control frame")
            elif opcode == OP_PING:
                self.write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._closed_by_peer(payload)
            return
        if opcode == OP_CONT:
            if not self._fragments:
                self._violation(PROTOCOL_ERROR, "a continuation without a message")
                return
        elif self._fragments or opcode not in (OP_TEXT, OP_BINARY):
            self._violation(PROTOCOL_ERROR, "an unknown opcode or an interleaved message")
            return
        if not final or self._fragments:
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > self._max:
                self._violation(MESSAGE_TOO_BIG, "a message over the size limit")
                return
            if not final:
                return
            payload, self._fragments = b"".join(self._fragments), []
        self._message(payload)

    def _message(self, payload: bytes) -> None:
        deliver = self._deliver
        if deliver is not None:
            deliver(payload)
            return
        self._inbox.append(payload)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _closed_by_peer(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else _NO_STATUS
        self.close_code = code
        self._send_close(self._answer(code), "")
        if self._transport is not None:
            self._transport.close()
        self._end()

    def _violation(self, code: int, what: str) -> None:
        self.close_code = code
        self._send_close(code, what)
        if self._transport is not None:
            self._transport.close()
        self._end()

    def _end(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the agent's side ------------------------------------------------------------

    async def opened(self) -> None:
        await self._opened

    @property
    def ended(self) -> asyncio.Future[None]:
        """Done once the server closed, the connection was lost or broke the protocol."""
        return self._ended

    async def receive(self) -> bytes | None:
        """The next message, ``None`` once the connection ended (before :meth:`deliver`)."""
        while not self._inbox:
            if self._ended.done():
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    def deliver(self, callback: Callable[[bytes], None]) -> None:
        """From now on hand each message to ``callback`` as it is read, queued ones first."""
        self._deliver = callback
        while self._inbox and self._deliver is callback:
            callback(self._inbox.popleft())

    def abort(self) -> None:
        """Drop the connection without a close frame (an upgrade that failed)."""
        if self._transport is not None:
            self._transport.close()

    def write(self, data: bytes) -> bool:
        """Send one encoded frame; ``False`` when the connection is closing."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._sent_close:
            return False
        transport.write(data)
        return True

    def send(self, payload: bytes) -> bool:
        """Send ``payload`` as one binary message; ``False`` when the connection is closing."""
        return self.write(client_frame(OP_BINARY, payload))

    def hold(self, backlog: int) -> None:
        """Stop reading while ``backlog`` messages wait for the agent, resume once fewer."""
        if backlog >= _MAX_BACKLOG:
            self._pause(1)
        elif backlog == 0:
            self._resume(1)

    def _pause(self, why: int) -> None:
        if not self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._paused |= why

    def _resume(self, why: int) -> None:
        was = self._paused
        self._paused &= ~why
        transport = self._transport
        if was and not self._paused and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _send_close(self, code: int, reason: str) -> None:
        if self._sent_close or self._transport is None or self._transport.is_closing():
            return
        raw = reason.encode()[:123]
        self._transport.write(client_frame(OP_CLOSE, code.to_bytes(2, "big") + raw))
        self._sent_close = True

    async def close(self, code: int, reason: str = "") -> None:
        """Send a close frame with ``code`` (unless one was sent) and end the connection at
        once: this side ends the TCP connection first, so the server's port keeps no
        TIME_WAIT of it."""
        self._send_close(code, reason)
        if self._transport is not None:
            self._transport.close()


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


async def open_socket(
    url: str, protocols: tuple[str, ...], max_message: int, answer: Callable[[int], int]
) -> Socket:
    """Connect to ``url`` and complete the upgrade; the caller bounds the time and closes
    the socket. A close from the server is answered with ``answer(its code)``. Raises
    :class:`HandshakeRefused`, :class:`HandshakeFailed` or ``OSError``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme.lower() in _SECURE
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority = f"{authority}:{port}"
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    context = _tls() if secure else None
    _, sock = await loop.create_connection(
        lambda: Socket(request, _accept(key), max_message, answer),
        host,
        port,
        ssl=context,
        server_hostname=host if secure else None,
    )
    try:
        await sock.opened()
    except BaseException:
        sock.abort()
        raise
    return sock
