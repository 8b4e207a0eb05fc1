"""The orchestrator writes its frames to agents itself (``fleet_server._link.server_frame``):
each must be exactly the unmasked binary frame RFC 6455 §5.2 describes, for every length
form, and a real WebSocket reader must read it back."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.base_protocol import BaseProtocol

from fleet_server._link import server_frame


@pytest.mark.parametrize(
    ("size", "head"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65_535, b"\x82\x7e\xff\xff"),
        (65_536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
async def test_each_length_form_is_the_rfc_header_then_the_payload(size: int, head: bytes) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = server_frame(payload)
    assert frame == head + payload
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), 2**20, loop=loop)
    reader = WebSocketReader(queue, 0, compress=False, decode_text=True)
    reader.feed_data(frame)
    message = await queue.read()
    assert message.type is WSMsgType.BINARY and message.data == payload
