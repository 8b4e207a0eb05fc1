"""A minimal WebSocket client on a bare asyncio protocol, for thousands of agents per process.

It does what a simulated agent needs and nothing else: the HTTP upgrade offering
subprotocols, binary messages in and out, ping → pong, the close handshake. Client
frames carry the mask bit with an all-zero key (RFC 6455 §5.3 lets the key be any
value; zero leaves the payload as is), so a precomputed reply goes out unchanged.
The ``Sec-WebSocket-Accept`` value is not verified: the peer is a local test server.
A refused upgrade keeps the ``Fleet-Leader`` header a standby sends (:attr:`leader`).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import Final

__all__ = ["NO_CLOSE_CODE", "WsClient"]

NO_CLOSE_CODE: Final = 1006  # the connection ended without a close frame
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK: Final = b"\x00\x00\x00\x00"
_MAX_HEAD: Final = 16 * 1024
_LEADER_FIELD: Final = b"\r\nfleet-leader:"


def _frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return b"".join((head, _ZERO_MASK, payload))


def _leader_hint(head: bytes) -> str | None:
    """The ``Fleet-Leader`` header of a refused upgrade's response head, if any."""
    start = head.lower().find(_LEADER_FIELD)
    if start < 0:
        return None
    start += len(_LEADER_FIELD)
    end = head.find(b"\r\n", start)
    value = head[start : end if end >= 0 else len(head)].strip().decode("latin-1")
    return value or None


_READ_VIEW: Final = memoryview(bytearray(64 * 1024))
"""One read buffer for every client of the process (each read is copied out before the
next): a plain ``recv`` would allocate, map and unmap 256 KiB for every message."""


class WsClient(asyncio.BufferedProtocol):
    """One client connection. Callbacks: ``on_open()``, ``on_message(bytes)``,
    ``on_close(code, http_status)`` — exactly once, whatever ended the connection
    (``code`` is :data:`NO_CLOSE_CODE` without a close frame; ``http_status`` is set
    when the upgrade was refused)."""

    def __init__(
        self,
        *,
        host: str,
        path: str,
        protocols: tuple[str, ...],
        on_open: Callable[[], None],
        on_message: Callable[[bytes], None],
        on_close: Callable[[int, int | None], None],
    ) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {', '.join(protocols)}\r\n\r\n"
        ).encode()
        self._on_open = on_open
        self._on_message = on_message
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] = []
        self._close_code: int | None = None
        self._http_status: int | None = None
        self._close_sent = False
        self._finished = False
        self.leader: str | None = None  # a refusal's Fleet-Leader header (a standby's hint)

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_READ_VIEW[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if not self._upgraded:
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    self._fail_upgrade(0)
                return
            head = bytes(self._buf[:end])
            rest = bytes(self._buf[end + 4 :])
            self._buf.clear()
            try:
                status = int(head[9:12])
            except ValueError:
                status = 0
            if status != 101:
                self.leader = _leader_hint(head)
                self._fail_upgrade(status)
                return
            self._upgraded = True
            self._on_open()
            if rest:
                self._feed(rest)
            return
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finish()

    # --- sending ------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._upgraded and self._transport is not None and not self._close_sent

    @property
    def finished(self) -> bool:
        """The connection is over (``on_close`` has run)."""
        return self._finished

    def send(self, payload: bytes) -> bool:
        """Send one binary message; False when the connection is not open."""
        transport = self._transport
        if transport is None or not self._upgraded or self._close_sent:
            return False
        transport.write(_frame(_OP_BINARY, payload))
        return True

    def close(self, code: int = 1000) -> None:
        """Start the close handshake (the server answers and drops the TCP connection)."""
        transport = self._transport
        if transport is None:
            return
        if not self._upgraded:
            transport.abort()
            return
        if not self._close_sent:
            self._close_sent = True
            transport.write(_frame(_OP_CLOSE, code.to_bytes(2, "big")))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- receiving ----------------------------------------------------------------

    def _fail_upgrade(self, status: int) -> None:
        self._http_status = status
        if self._transport is not None:
            self._transport.abort()

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            used = self._parse(buf)
            del buf[:used]
        else:
            used = self._parse(data)
            if used < len(data):
                buf += data[used:]

    def _parse(self, data: bytes | bytearray) -> int:
        pos = 0
        total = len(data)
        while total - pos >= 2:
            first = data[pos]
            length = data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if total - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if total - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            if data[pos + 1] & 0x80:  # servers never mask; tolerate it anyway
                head += 4
            end = pos + head + length
            if end > total:
                break
            mask = data[pos + head - 4 : pos + head] if data[pos + 1] & 0x80 else None
            payload = bytes(data[pos + head : end])
            if mask is not None and mask != _ZERO_MASK:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            pos = end
            self._frame_in(first & 0x0F, bool(first & 0x80), payload)
            if self._transport is None:
                break
        return pos

    def _frame_in(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode in (_OP_BINARY, _OP_TEXT):
            if fin:
                self._on_message(payload)
            else:
                self._fragments = [payload]
        elif opcode == _OP_CONT:
            self._fragments.append(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments = []
                self._on_message(message)
        elif opcode == _OP_CLOSE:
            self._close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            transport = self._transport
            if transport is not None:
                if not self._close_sent:
                    self._close_sent = True
                    transport.write(_frame(_OP_CLOSE, payload[:2]))
                transport.close()
        elif opcode == _OP_PING and self._transport is not None and not self._close_sent:
            self._transport.write(_frame(_OP_PONG, payload))

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        code = self._close_code if self._close_code is not None else NO_CLOSE_CODE
        self._on_close(code, self._http_status)
