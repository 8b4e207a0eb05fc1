"""A ``WatchEvents`` stream read off a raw HTTP/2 connection, for the bench's consumer.

grpc.aio's client costs 100+ µs of CPU per message: ten streams at 1,000 events/s took
a core of a two-core machine from the orchestrator being measured. This reader speaks
just enough HTTP/2 (RFC 9113) and gRPC framing to open one ``WatchEvents`` call per
connection and read its messages: the preface, SETTINGS (acknowledged), PING (answered),
WINDOW_UPDATE (sent as data is read), one HEADERS frame of HPACK literals (RFC 7541
§6.2.2, no table, no Huffman) and DATA frames holding length-prefixed messages. The
response's headers and trailers are not decoded: a stream that ends (trailers,
RST_STREAM, GOAWAY, a closed socket) before :meth:`H2Watch.stop` is an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Final, cast

from rivalis.fleet.v1 import control_pb2 as pb

from ._histogram import Histogram

__all__ = ["H2Watch", "hpack_literal"]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
METHOD: Final = "/rivalis.fleet.v1.FleetControl/WatchEvents"
WINDOW: Final = 1 << 24  # the receive window this side grants, stream and connection
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY = 0, 1, 3, 4, 6, 7
_END_STREAM, _ACK, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8
_STREAM: Final = 1  # the one call of each connection


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: str, value: str) -> bytes:
    """One header as a literal without indexing, with a literal name (RFC 7541 §6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return (
        b"\x00"
        + _hpack_int(len(raw_name), 7)
        + raw_name
        + _hpack_int(len(raw_value), 7)
        + raw_value
    )


def _window_update(stream: int, increment: int) -> bytes:
    return _frame(8, 0, stream, increment.to_bytes(4, "big"))


class H2Watch(asyncio.Protocol):
    """One ``WatchEvents`` call on its own connection: counts events by type and adds
    the delivery delay of stamped ``room:create`` events (``x<monotonic µs>-…``) to
    ``latency``."""

    def __init__(self, authority: str, key: str, latency: Histogram) -> None:
        self._authority = authority
        self._key = key
        self.latency = latency
        self.counts: Counter[str] = Counter()
        self.open = False
        self.ended = False
        self.error = ""
        self.stopping = False
        self._buf = bytearray()
        self._messages = bytearray()
        self._unacknowledged = 0  # DATA bytes read since the last WINDOW_UPDATE
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's too
        settings = (2).to_bytes(2, "big") + (0).to_bytes(4, "big")  # no push
        settings += (4).to_bytes(2, "big") + WINDOW.to_bytes(4, "big")
        headers = b"".join(
            hpack_literal(name, value)
            for name, value in (
                (":method", "POST"),
                (":scheme", "http"),
                (":path", METHOD),
                (":authority", self._authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("authorization", f"Bearer {self._key}"),
            )
        )
        transport.write(
            PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _window_update(0, WINDOW - 65_535)
            + _frame(_HEADERS, _END_HEADERS, _STREAM, headers)
            + _frame(_DATA, _END_STREAM, _STREAM, b"\x00\x00\x00\x00\x00")  # empty request
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("connection closed")
        self.transport = None

    def stop(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.abort()

    def _end(self, why: str) -> None:
        if not self.ended and not self.stopping and not self.error:
            self.error = why
        self.ended = True

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        at, size = 0, len(buf)
        while size - at >= 9:
            length = int.from_bytes(buf[at : at + 3], "big")
            end = at + 9 + length
            if end > size:
                break
            kind, flags = buf[at + 3], buf[at + 4]
            self._on_frame(kind, flags, bytes(buf[at + 9 : end]))
            at = end
        del buf[:at]
        if self._messages:
            self._read_messages()

    def _on_frame(self, kind: int, flags: int, payload: bytes) -> None:
        transport = self.transport
        if kind == _DATA:
            self._unacknowledged += len(payload)
            if flags & _PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            self._messages += payload
            if self._unacknowledged >= WINDOW // 4 and transport is not None:
                grant = self._unacknowledged
                self._unacknowledged = 0
                transport.write(_window_update(0, grant) + _window_update(_STREAM, grant))
        elif kind == _HEADERS:
            self.open = True
            if flags & _END_STREAM:
                self._end("stream ended by the server")
        elif kind == _SETTINGS:
            if not flags & _ACK and transport is not None:
                transport.write(_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING:
            if not flags & _ACK and transport is not None:
                transport.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _RST:
            self._end("stream reset by the server")
        elif kind == _GOAWAY:
            self._end("connection closed by the server (GOAWAY)")

    def _read_messages(self) -> None:
        data = self._messages
        at, size = 0, len(data)
        counts = self.counts
        now = time.monotonic_ns() // 1000
        while size - at >= 5:
            length = int.from_bytes(data[at + 1 : at + 5], "big")
            end = at + 5 + length
            if end > size:
                break
            event = pb.FleetEvent.FromString(bytes(data[at + 5 : end]))
            kind = event.type
            counts[kind] += 1
            if kind == "room:create":
                room_id = event.room.id
                if room_id.startswith("x"):
                    stamp = int(room_id[1 : room_id.index("-")])
                    self.latency.add((now - stamp) / 1e6)
            at = end
        del data[:at]
