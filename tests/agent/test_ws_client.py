"""The agent's WebSocket client against a raw TCP server that writes the bytes by hand:
the upgrade answer cut anywhere, frames cut and joined anywhere, fragments, pings,
protocol breaks, refusals, masking and the close handshake."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet_agent._ws import ABNORMAL, HandshakeFailed, HandshakeRefused, Socket, open_socket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX = 1 << 20


def _answer(code: int) -> int:
    return 1001 if code in (1000, 1005) else code


def server_frame(opcode: int, payload: bytes, *, final: bool = True, masked: bool = False) -> bytes:
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 65536:
        head = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    return head + (b"\x00\x00\x00\x00" if masked else b"") + payload


@dataclass
class Peer:
    """The server's side of one connection: the request head, and what the client sent."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    request: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def accept_value(self) -> str:
        key = self.headers["sec-websocket-key"].encode()
        return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()

    def upgrade(self, protocol: str = "rivalis.fleet.v3", accept: str | None = None) -> bytes:
        return (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept or self.accept_value()}\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        ).encode()

    async def read_frame(self) -> tuple[int, bytes]:
        """One client frame: its opcode and unmasked payload (every client frame is masked)."""
        b0, b1 = await self.reader.readexactly(2)
        assert b1 & 0x80, "a client frame must be masked"
        size = b1 & 0x7F
        if size == 126:
            size = int.from_bytes(await self.reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await self.reader.readexactly(8), "big")
        key = await self.reader.readexactly(4)
        data = await self.reader.readexactly(size)
        return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    done: list[asyncio.Task[None]] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        peer = Peer(reader, writer, lines[0], headers)
        task = asyncio.current_task()
        assert task is not None
        done.append(task)
        try:
            await script(peer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/agent?x=1"
    finally:
        server.close()
        for task in done:
            task.cancel()


async def dial(url: str) -> Socket:
    return await asyncio.wait_for(
        open_socket(url, ("rivalis.fleet.v3", "the-key"), MAX, _answer), 5
    )


async def test_the_upgrade_and_first_frames_cut_byte_by_byte_arrive_whole() -> None:
    async def script(peer: Peer) -> None:
        data = peer.upgrade() + server_frame(2, b"hello") + server_frame(2, b"x" * 300)
        for byte in data:
            peer.writer.write(bytes((byte,)))
            await peer.writer.drain()
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        sock = await dial(url)
        assert sock.protocol == "rivalis.fleet.v3"
        assert await sock.receive() == b"hello"
        assert await sock.receive() == b"x" * 300
        await sock.close(1001)


async def test_the_request_carries_the_path_query_and_subprotocols() -> None:
    seen: list[Peer] = []

    async def script(peer: Peer) -> None:
        seen.append(peer)
        peer.writer.write(peer.upgrade())
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        sock = await dial(url)
        await sock.close(1001)
    peer = seen[0]
    assert peer.request == "GET /agent?x=1 HTTP/1.1"
    assert peer.headers["sec-websocket-protocol"] == "rivalis.fleet.v3, the-key"
    assert peer.headers["upgrade"] == "websocket"
    assert peer.headers["host"].startswith("127.0.0.1:")


async def test_many_frames_in_one_segment_fragments_and_a_ping() -> None:
    got: list[tuple[int, bytes]] = []

    async def script(peer: Peer) -> None:
        big = b"y" * 70_000  # a 64-bit length
        peer.writer.write(
            peer.upgrade()
            + server_frame(2, b"a")
            + server_frame(2, b"b1", final=False)
            + server_frame(9, b"are you there")  # a ping between fragments
            + server_frame(0, b"b2", final=False)
            + server_frame(0, b"b3")
            + server_frame(1, "text é".encode())
            + server_frame(2, big)
        )
        got.append(await peer.read_frame())
        got.append(await peer.read_frame())
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        sock = await dial(url)
        messages = [await sock.receive() for _ in range(4)]
        assert messages == [b"a", b"b1b2b3", "text é".encode(), b"y" * 70_000]
        assert sock.send(b"z" * 200)
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
        await sock.close(1001)
    assert got == [(0xA, b"are you there"), (0x2, b"z" * 200)]


async def test_messages_are_delivered_in_order_once_a_callback_takes_them() -> None:
    async def script(peer: Peer) -> None:
        peer.writer.write(peer.upgrade() + server_frame(2, b"1") + server_frame(2, b"2"))
        await asyncio.sleep(0.2)
        peer.writer.write(server_frame(2, b"3"))
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        sock = await dial(url)
        await asyncio.sleep(0.1)  # 1 and 2 queue
        seen: list[bytes] = []
        sock.deliver(seen.append)
        assert seen == [b"1", b"2"]
        for _ in range(50):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.05)
        assert seen == [b"1", b"2", b"3"]
        await sock.close(1001)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (server_frame(2, b"masked", masked=True), 1002),
        (server_frame(2 | 0x40, b"rsv1"), 1002),
        (server_frame(9, b"p", final=False), 1002),
        (server_frame(0, b"orphan"), 1002),
        (server_frame(5, b"reserved opcode"), 1002),
        (server_frame(2, b"x" * (MAX + 1)), 1009),
    ],
    ids=["masked", "rsv", "fragmented-ping", "orphan-continuation", "opcode", "too-big"],
)
async def test_a_protocol_break_closes_with_its_code(frame: bytes, code: int) -> None:
    answers: list[tuple[int, bytes]] = []

    async def script(peer: Peer) -> None:
        peer.writer.write(peer.upgrade() + server_frame(2, b"ok"))
        await peer.writer.drain()
        peer.writer.write(frame)
        answers.append(await peer.read_frame())
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        sock = await dial(url)
        assert await sock.receive() == b"ok"
        assert await sock.receive() is None
        assert sock.close_code == code
        for _ in range(50):
            if answers:
                break
            await asyncio.sleep(0.05)
    assert answers and answers[0][0] == 0x8
    assert int.from_bytes(answers[0][1][:2], "big") == code


@pytest.mark.parametrize(("sent", "answered"), [(1000, 1001), (4010, 4010), (None, 1001)])
async def test_a_close_from_the_server_is_answered(sent: int | None, answered: int) -> None:
    answers: list[tuple[int, bytes]] = []

    async def script(peer: Peer) -> None:
        payload = b"" if sent is None else sent.to_bytes(2, "big") + b"bye"
        peer.writer.write(peer.upgrade() + server_frame(8, payload))
        answers.append(await peer.read_frame())

    async with raw_server(script) as url:
        sock = await dial(url)
        assert await sock.receive() is None
        assert sock.close_code == (1005 if sent is None else sent)
        for _ in range(50):
            if answers:
                break
            await asyncio.sleep(0.05)
    assert answers[0][0] == 0x8
    assert int.from_bytes(answers[0][1][:2], "big") == answered
    assert not sock.send(b"after the close")


async def test_a_lost_connection_ends_with_1006() -> None:
    async def script(peer: Peer) -> None:
        peer.writer.write(peer.upgrade())
        await peer.writer.drain()

    async with raw_server(script) as url:
        sock = await dial(url)
        assert await sock.receive() is None
        assert sock.close_code == ABNORMAL
        assert sock.ended.done()


async def test_a_refused_upgrade_keeps_its_status_and_headers() -> None:
    async def script(peer: Peer) -> None:
        peer.writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nFleet-Leader: ws://10.0.0.2:7350/agent\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        with pytest.raises(HandshakeRefused) as refused:
            await dial(url)
    assert refused.value.status == 503
    assert refused.value.headers["fleet-leader"] == "ws://10.0.0.2:7350/agent"
    assert "the-key" not in str(refused.value)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Pad: " + b"p" * 20_000,
    ],
    ids=["wrong-accept", "not-http", "endless-head"],
)
async def test_a_bad_upgrade_answer_fails_the_attempt(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        peer.writer.write(answer)
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        with pytest.raises(HandshakeFailed):
            await dial(url)


async def test_a_connection_closed_during_the_upgrade_is_a_connection_error() -> None:
    async def script(peer: Peer) -> None:
        peer.writer.write(b"HTTP/1.1 101 Switching")

    async with raw_server(script) as url:
        with pytest.raises(ConnectionError):
            await dial(url)


async def test_a_long_message_goes_out_masked_and_whole() -> None:
    got: list[tuple[int, bytes]] = []
    payload = bytes(range(256)) * 400  # 102,400 bytes: a 64-bit length, the in-place mask

    async def script(peer: Peer) -> None:
        peer.writer.write(peer.upgrade())
        got.append(await peer.read_frame())
        await asyncio.sleep(5)

    async with raw_server(script) as url:
        sock = await dial(url)
        assert sock.send(payload)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.05)
        await sock.close(1001)
    assert got == [(0x2, payload)]


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1023, 1024, 1025, 4099])
def test_every_mask_agrees_with_the_rfc(size: int) -> None:
    from fleet_agent._ws_frames import _masked, _translated

    payload = bytes((7 * i + 3) % 256 for i in range(size))
    key = b"\x9a\x01\xff\x10"
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert bytes(_masked(payload, key)) == expected
    slow = bytearray(payload)
    _translated(key, slow)
    assert slow == expected


def test_wss_upgrades_over_tls_and_checks_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def script(peer: Peer) -> None:
        peer.writer.write(peer.upgrade() + server_frame(2, b"x" * 100_000))
        got.append(await peer.read_frame())
        await asyncio.sleep(5)

    got: list[tuple[int, bytes]] = []

    async def run() -> None:
        async with raw_server(script, server_tls) as url:
            with pytest.raises(ssl.SSLCertVerificationError):  # not a trusted certificate
                await dial(url)
            trusting = ssl.create_default_context(cafile=str(cert))
            monkeypatch.setattr("fleet_agent._ws._tls", lambda: trusting)
            sock = await dial(url)
            assert await sock.receive() == b"x" * 100_000  # read in 64 KiB pieces
            assert sock.send(b"over tls")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.05)
            await sock.close(1001)
        assert got[-1] == (0x2, b"over tls")

    asyncio.run(run())
